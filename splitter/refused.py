"""The one refusal: an answer splitter gives itself instead of going on (before #37 there were three
classes: the proxy's, the admin API's and the rollouts'). A leaf: every layer may raise it."""

from __future__ import annotations


class Refused(Exception):
    """`status` is what the client gets, `kind` how it is counted (splitter_rejected_total's reason,
    the log's `error`), `message` what the client reads."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message
