"""A migration's progress for the people who asked for it: per route, where it stands, how it got there,
and how new compared with legacy at each step, in the migration plan's words.

    GET /admin/progress   build(): the JSON (admin/migration.py gathers its inputs)
    splitter progress     text(), markdown(), html() of that JSON (cli/report.py asks the admin API)

Inputs are what the admin API already holds: the change history (who moved a route, when and why),
the rollout records (each ended step's counts, rollout.keep_step, and the current step's) and the
routes' live state. Each step's numbers come with 95 % intervals from the judge's own statistics
(judge.py): Clopper-Pearson for error rates, order statistics for p95, the p95 ratio from both p95
intervals each at sqrt(0.95) (they hold together at 0.95), Newcombe for the error-rate difference;
a change is called lower or higher only when its whole interval says so. Pure: no I/O, no clock.

The package: model (the document: build, route_progress, the Prometheus steps), words (how it is said:
the summary line, the cells), and its renderers: plain (text, markdown) and page (html).
"""

from .model import build, prometheus_step, route_progress, segments, with_steps
from .page import html
from .plain import markdown, text
from .words import date, when

__all__ = [
    "build", "date", "html", "markdown", "prometheus_step", "route_progress", "segments", "text", "when", "with_steps",
]
