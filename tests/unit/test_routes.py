"""Route matching by segments (splitter/routes.py): the longest prefix on a segment boundary,
the same answers as the linear scan it replaced, for any prefixes and paths."""

from hypothesis import given
from hypothesis import strategies as st

from splitter.routes import RouteTable


def linear_scan(prefixes: list[str], path: str) -> str | None:
    """The matcher before routes.py (config.py): longest first, first hit on a segment boundary."""
    ordered = sorted(prefixes, key=len, reverse=True)
    for prefix in ordered:
        if path.startswith(prefix):
            n = len(prefix)
            if len(path) == n or path[n] == "/" or prefix[-1] == "/":
                return prefix
    return None


def table(*prefixes: str) -> RouteTable[str]:
    return RouteTable([(p, p) for p in prefixes])


def test_a_prefix_matches_itself_and_below_it_on_a_segment_boundary_only():
    t = table("/api/auth")
    assert t.match("/api/auth") == "/api/auth"
    assert t.match("/api/auth/") == "/api/auth"
    assert t.match("/api/auth/login") == "/api/auth"
    assert t.match("/api/authx") is None
    assert t.match("/api") is None
    assert t.match("/other") is None


def test_the_longest_prefix_wins_whatever_the_order_given():
    t = table("/", "/api/auth/login", "/api", "/api/auth")
    assert t.match("/api/auth/login/x") == "/api/auth/login"
    assert t.match("/api/auth/logout") == "/api/auth"
    assert t.match("/api/users") == "/api"
    assert t.match("/apix") == "/"
    assert t.match("/") == "/"


def test_root_matches_every_path_that_starts_with_a_slash_and_nothing_else():
    t = table("/")
    assert t.match("/") == "/"
    assert t.match("//x") == "/"
    assert t.match("*") is None
    assert t.match("") is None
    assert table("/api").match("*") is None


def test_no_prefixes_match_nothing():
    assert table().match("/") is None


def test_a_duplicate_prefix_keeps_the_first_as_the_scan_did():
    t = RouteTable([("/a", "first"), ("/a", "second")])
    assert t.match("/a/b") == "first"


def test_a_prefix_must_start_with_a_slash():
    try:
        table("api")
    except ValueError as exc:
        assert "starts with /" in str(exc)
    else:
        raise AssertionError("accepted a prefix without a leading /")


def test_ten_thousand_routes_still_find_the_longest():
    prefixes = [f"/svc{i}/v{i % 7}" for i in range(10_000)] + ["/svc42"]
    t = table(*prefixes)
    assert t.match("/svc42/v0/items") == "/svc42/v0"
    assert t.match("/svc42/v1") == "/svc42"
    assert t.match("/svc9999/v3/x") == "/svc9999/v3"
    assert t.match("/svc10000/v0") is None


# few letters and many slashes, so prefixes share segments, nest and end mid-segment
SEGMENT = st.text(alphabet="ab/", max_size=6)
PATH = st.builds(lambda s: "/" + s, SEGMENT) | st.text(alphabet="ab/*", max_size=8)
PREFIX = st.builds(lambda s: "/" + s, SEGMENT)
NORMAL = st.builds(lambda s: ("/" + s).rstrip("/") or "/", SEGMENT)  # as config/validate_route.py stores them


@given(st.lists(PREFIX, unique=True, max_size=8), st.lists(PATH, max_size=10))
def test_same_answer_as_the_linear_scan_for_any_prefixes(prefixes, paths):
    t = table(*prefixes)
    for path in paths:
        assert t.match(path) == linear_scan(prefixes, path), path


@given(st.lists(NORMAL, unique=True, max_size=8), st.lists(PATH, max_size=10))
def test_same_answer_as_the_linear_scan_for_normalised_prefixes(prefixes, paths):
    t = table(*prefixes)
    for path in paths:
        assert t.match(path) == linear_scan(prefixes, path), path
        for prefix in prefixes:  # each prefix and what lies below it, too
            for probe in (prefix, prefix + "/", prefix + "/a", prefix + "a"):
                assert t.match(probe) == linear_scan(prefixes, probe), probe
