"""yamledit: a route's keys set or removed in routes.yaml's text, every other byte kept (what `splitter retire`
and `splitter sync --write` write into the file an operator commits)."""

from __future__ import annotations

import pytest

from splitter.config import parse
from splitter.yamledit import EditError, edit_route, unified_diff

FILE = """# shop routes
environment: staging      # SPLITTER_ENV overrides this
backends:
  legacy: {url: "http://127.0.0.1:8001"}   # the monolith
  new:    {url: 'http://127.0.0.1:8002'}
routes:
- name: auth              # dash at the margin: another indentation style
  prefix: /api/auth
  percent:                # block style, per environment
    staging: 50           # half
    production: 10
  shadow:
    percent: 100          # every request copied
    methods: [GET]
  # checkout follows auth
- name: checkout
  prefix: "/api/checkout"
  percent: 0
unmatched: legacy
"""


def test_a_per_environment_percent_is_set_in_every_environment_and_nothing_else_moves():
    out = edit_route(FILE, "auth", {"percent": 100}, ("rollout", "guard", "shadow"))
    assert unified_diff(FILE, out, "routes.yaml").splitlines()[2:] == [
        "@@ -7,11 +7,8 @@",
        " - name: auth              # dash at the margin: another indentation style",
        "   prefix: /api/auth",
        "   percent:                # block style, per environment",
        "-    staging: 50           # half",
        "-    production: 10",
        "-  shadow:",
        "-    percent: 100          # every request copied",
        "-    methods: [GET]",
        "+    staging: 100          # half",
        "+    production: 100",
        "   # checkout follows auth",
        " - name: checkout",
        '   prefix: "/api/checkout"',
    ]
    assert parse(out).by_name["auth"].percent == 100 and parse(out).by_name["auth"].shadow is None


def test_a_mapping_sets_only_the_environments_it_names_and_a_missing_key_is_added_at_the_route_s_end():
    out = edit_route(FILE, "auth", {"percent": {"production": 25}})
    assert "    staging: 50           # half\n    production: 25\n" in out
    out = edit_route(FILE, "checkout", {"percent": 100, "salt": "s1"})
    assert out.endswith('  percent: 100\n  salt: "s1"\nunmatched: legacy\n'), out


def test_what_it_cannot_do_safely_is_one_line_and_no_text():
    with pytest.raises(EditError, match=r"no route 'nope' in the file \(routes: auth, checkout\)"):
        edit_route(FILE, "nope", {"percent": 100})
    with pytest.raises(EditError, match="names no environment 'dev'"):
        edit_route(FILE, "auth", {"percent": {"dev": 100}})
    flow = FILE.replace("- name: checkout\n  prefix: \"/api/checkout\"\n  percent: 0\n", "- {name: checkout, prefix: /c, percent: 0}\n")
    with pytest.raises(EditError, match="written on one line"):
        edit_route(flow, "checkout", {"percent": 100})
    with pytest.raises(EditError, match="not YAML"):
        edit_route("routes: [", "auth", {"percent": 100})
