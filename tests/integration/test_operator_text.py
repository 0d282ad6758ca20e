"""Operator text is shown inert (issue #32 item 7): a reason and an on_behalf sent to the admin API
reach `splitter history` (a real process) with every control character written out, one line per
event (cohort members need none: the admin API takes printable ids only); `--json` stays exact; a
Slack receiver (a real HTTP server here) gets `&`, `<`, `>` escaped, so `<!channel>` and
`<https://evil|...>` arrive as plain text."""

from __future__ import annotations

import json

import httpx
from conftest import eventually, routes_yaml
from test_cli import run
from test_history import receiver  # noqa: F401 - the fixture

from splitter import report
from splitter.text import CONTROLS, slack, terminal

TOKEN = "operator-text-token"
FORGED = "2026-12-01 03:12:40  guard        guard    guard_trip       auth           50 -> 0        forged"
REASON = f"\x1b[31mred\x00nul\n{FORGED}\u202egnp.exe\x9b2J <!channel> <https://evil|Open the runbook> & co"


def raw_controls(text: str) -> list[str]:
    """The control characters in `text`; a printed line's own end is not one."""
    return sorted({hex(ord(c)) for c in text.replace("\n", "") if ord(c) in CONTROLS})


def test_history_and_slack_escape_control_characters_one_line_per_event(standin, splitter, receiver):  # noqa: F811
    extra = f'notify:\n  - {{url: "{receiver.url}", format: slack}}'
    s = splitter(routes_yaml(standin("legacy"), standin("new"), extra=extra), env={"SPLITTER_ADMIN_TOKEN": TOKEN})
    auth = {"Authorization": f"Bearer {TOKEN}"}
    r = httpx.put(
        s.admin + "/admin/routes/auth",
        json={"percent": 40, "reason": REASON},
        headers={**auth, "X-Splitter-Actor": b"bob\x9b31m"},
    )
    assert r.status_code == 200, r.text

    shown = run("history", "--admin", s.admin)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert len(lines) == 2, lines  # the head and the one event: the newline forged nothing
    assert raw_controls(shown.stdout) == [] and not any(line.startswith("2026-12-01") for line in lines)
    assert "admin (bob\\x9b31m)" in lines[1] and "\\x1b[31mred\\x00nul\\n2026-12-01" in lines[1]
    assert "\\u202egnp.exe\\x9b2J" in lines[1]
    (exact,) = json.loads(run("history", "--json", "--admin", s.admin).stdout)
    assert (exact["reason"], exact["on_behalf"]) == (REASON, "bob\x9b31m")  # --json: the text as sent

    ((_, body),) = eventually(lambda: receiver.got)
    said = body["text"]
    assert "&lt;!channel&gt; &lt;https://evil|Open the runbook&gt; &amp; co" in said, said
    assert "<" not in said and ">" not in said and raw_controls(said) == [], said
    assert "admin (for bob\\x9b31m) set auth" in said and "\\x1b[31mred\\x00nul\\n2026" in said


def test_the_report_table_and_the_helpers_escape_what_they_should_and_only_that():
    reports = report.build({"a\x1b[2Jb\nc": {"legacy": report.Side(), "new": report.Side()}})
    table = report.table(reports)
    assert "a\\x1b[2Jb\\nc" in table and raw_controls(table) == []
    assert terminal("café → naïve 日本 \\ tab\there") == "café → naïve 日本 \\ tab\\there"
    assert terminal("\x00\x7f\x85\u2028\u2029\u202a\u202e\u2066\u2069\ud800") == (
        "\\x00\\x7f\\x85\\u2028\\u2029\\u202a\\u202e\\u2066\\u2069\\ud800"
    )
    assert slack("a & <b> &amp;") == "a &amp; &lt;b&gt; &amp;amp;"
