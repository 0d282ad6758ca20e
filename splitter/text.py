"""Operator text made inert where it is shown: a terminal line, a chat message.

A reason, a name, a cohort member or a request id is whatever someone sent the admin API or
the proxy, so it can carry characters that act instead of print: an ANSI escape recolours or
rewrites the terminal, a newline forges a second `splitter history` line (issue #32 showed a
fake `guard ... rollback`), a NUL or a lone surrogate breaks the line or the print itself, and
bidi controls reorder what the reader sees (Trojan Source, CVE-2021-42574). `terminal()` shows
each of them as visible escape text (`\\x1b`, `\\n`, `\\u202e`), as Python's repr does, and
leaves every other character alone. `--json` output needs none of this: json.dumps escapes them.

Slack reads `<...>` as a link or a mention (`<!channel>`) and `&` as an entity; its
"Formatting text" docs name the three characters to escape, `&`, `<` and `>`; `slack()` does that.
"""

from __future__ import annotations

_NAMED = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}
CONTROLS = (
    [*range(0x20), 0x7F, *range(0x80, 0xA0)]  # C0, DEL, C1
    + [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]  # bidi marks, embeddings, isolates
    + [0x2028, 0x2029, *range(0xD800, 0xE000)]  # line and paragraph separators; lone surrogates (JSON allows them)
)
_TERMINAL = {c: _NAMED.get(c) or (f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}") for c in CONTROLS}
_SLACK = {ord("&"): "&amp;", ord("<"): "&lt;", ord(">"): "&gt;"}


def terminal(text: str) -> str:
    """`text` with every control, bidi and separator character written out as escape text."""
    return text.translate(_TERMINAL)


def slack(text: str) -> str:
    """`text` that Slack shows as written: no mention, link or entity."""
    return text.translate(_SLACK)
