"""The upstream keep-alive soak, short: the same `soak` as scripts/soak_keepalive.py (5 minutes there)."""

import random
import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from soak_keepalive import soak, stack  # noqa: E402


def test_posts_every_two_seconds_to_a_backend_that_closes_idle_connections_after_two_never_get_a_502(tmp_path):
    """uvicorn --timeout-keep-alive 2 closes each connection about when the next POST (1.9-2.1 s later) is
    written on it; a POST is never retried, so a reused connection the backend is closing would be a 502.
    The default idle_timeout_s (1.5 s) gives it up first."""
    with stack(tmp_path) as url:
        counts = soak(url, 25, random.Random(37))
    assert counts["sent"] >= 10, counts
    assert counts["502"] == 0 and counts["failed"] == 0, counts
