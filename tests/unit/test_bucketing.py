import base64
import hashlib
import json

from splitter import bucketing
from splitter.config import IdSource


def reference_bucket(user_id: str) -> int:
    # the migration plan's ABTestManager, verbatim
    user_hash = hashlib.md5(user_id.encode()).hexdigest()
    return int(user_hash[:8], 16) % 100


IDS = [f"user-{i}" for i in range(10_000)]


def new_at(user_id: str, percent: float) -> bool:
    digest = bucketing.digest(user_id)
    return bucketing.is_new(bucketing.bucket_of(digest), digest, bucketing.cut(percent))


def test_bucket_matches_the_migration_plan_formula_for_10000_ids():
    assert [bucketing.bucket(u) for u in IDS] == [reference_bucket(u) for u in IDS]


def test_ten_percent_sends_ten_percent_plus_minus_one():
    share = sum(new_at(u, 10) for u in IDS) / len(IDS)
    assert 0.09 <= share <= 0.11


def test_raising_the_percent_only_adds_users():
    at10 = {u for u in IDS if new_at(u, 10)}
    at25 = {u for u in IDS if new_at(u, 25)}
    assert at10 < at25
    assert all(not new_at(u, 0) for u in IDS)
    assert all(new_at(u, 100) for u in IDS)


def test_salt_hashes_salt_colon_id():
    assert bucketing.bucket("alice", "auth-v2") == reference_bucket("auth-v2:alice")
    assert bucketing.bucket("alice", None) == reference_bucket("alice")


def jwt(claims: dict) -> str:
    enc = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()  # noqa: E731
    return f"{enc({'alg': 'HS256'})}.{enc(claims)}.sig"


def test_jwt_sub_is_read_without_verification():
    assert bucketing.jwt_sub(b"Bearer " + jwt({"sub": "u-42"}).encode()) == b"u-42"
    assert bucketing.jwt_sub(b"bearer " + jwt({"sub": 7}).encode()) == b"7"
    assert bucketing.jwt_sub(b"Bearer " + jwt({"sub": "José"}).encode()) == "José".encode()
    for bad in ["Basic abc", "Bearer x.y", "Bearer a.!!!.c", "Bearer " + jwt({"no": "sub"}), "Bearer " + jwt({"sub": True}), "Bearer a." + "A" * 9000 + ".c"]:
        assert bucketing.jwt_sub(bad.encode()) is None, bad


def test_sources_are_tried_in_order_first_non_empty_wins():
    sources = (IdSource("header", "x-user-id"), IdSource("jwt_sub", "authorization"), IdSource("cookie", "user_id"))
    token = b"Bearer " + jwt({"sub": "from-jwt"}).encode()
    assert bucketing.user_id(sources, {b"x-user-id": b"h", b"authorization": token}, False) == b"h"
    assert bucketing.user_id(sources, {b"x-user-id": b"  ", b"authorization": token}, False) == b"from-jwt"
    assert bucketing.user_id(sources, {b"cookie": b"a=1; user_id=c"}, False) == b"c"
    assert bucketing.user_id(sources, {b"cookie": b"splitter_uid=minted"}, False) is None
    assert bucketing.user_id(sources, {b"cookie": b"splitter_uid=minted"}, True) == b"minted"
    assert bucketing.user_id(sources, {b"x-user-id": b"x" * 10_000}, False) is None


def test_cookie_parsing_edge_cases():
    assert bucketing.cookie_value(b'a=1; user_id="quoted"', b"user_id") == b"quoted"
    assert bucketing.cookie_value(b"user_idx=1; user_id=2", b"user_id") == b"2"
    assert bucketing.cookie_value(b"garbage;;=;", b"user_id") is None


def test_bucket_is_a_function_of_the_exact_bytes():
    """A str id is its UTF-8 bytes; non-UTF-8 bytes hash as they are."""
    assert bucketing.bucket("José") == bucketing.bucket("José".encode()) == reference_bucket("José")
    raw = b"\xff\xfe-not-utf8"
    assert bucketing.bucket(raw) == int(hashlib.md5(raw).hexdigest()[:8], 16) % 100
    assert bucketing.bucket(raw, "s") == int(hashlib.md5(b"s:" + raw).hexdigest()[:8], 16) % 100


def test_the_request_paths_one_call_places_a_user_as_the_formula_does():
    """bucketing.placed (decide's single md5) agrees with digest/bucket_of, salted or not, for odd bytes too."""
    for uid in (b"alice", b"", b"\xff\xfe", "名前".encode(), b"x" * 300):
        for salt in (None, "", "s1"):
            d = bucketing.digest(uid, salt)
            assert bucketing.placed(uid, salt) == (bucketing.bucket_of(d), d)
