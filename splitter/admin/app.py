"""The admin app: its route table (scripts/gen_docs.py writes docs/reference/admin.md from it) behind the
read gate and the Host guard."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.routing import Route

from ..console import console_routes
from .cohorts import MemberPages, change_cohort, cohort_members, cohorts_view
from .common import ERRORS
from .migration import history, progress_view, state_export, state_import
from .overview import overview
from .rollouts import retire_route, rollout_action, rollouts_view
from .routes import bucket, clear_route, get_kill, kill_off, kill_on, list_routes, rollback, set_route, shadow_view
from .security import HostGuard, ViewerTokenGate, writer
from .status import healthz, metrics, readyz, whoami

if TYPE_CHECKING:
    from ..rollout import Rollouts
    from ..runtime import Runtime
    from ..shadow import Shadow
    from ..websocket import WebSockets


def create_admin(rt: Runtime, rollouts: Rollouts, shadow: Shadow, websockets: WebSockets) -> HostGuard:
    """The admin app: the endpoints below, which read what they act on from `app.state`
    (rt, rollouts, shadow, websockets), as Starlette's endpoints do."""
    admin = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
            Route("/admin/routes", list_routes),
            Route("/admin/routes/{name}", writer(set_route), methods=["PUT"]),
            Route("/admin/routes/{name}/override", writer(clear_route), methods=["DELETE"]),
            Route("/admin/routes/{name}/retire", writer(retire_route), methods=["POST"]),
            Route("/admin/rollback", writer(rollback), methods=["POST"]),
            Route("/admin/kill", get_kill, methods=["GET"]),
            Route("/admin/kill", writer(kill_on), methods=["PUT"]),
            Route("/admin/kill", writer(kill_off), methods=["DELETE"]),
            Route("/admin/bucket", bucket),
            Route("/admin/shadow/{name}", shadow_view),
            Route("/admin/rollouts", rollouts_view),
            Route("/admin/rollouts/{name}/{action}", writer(rollout_action), methods=["POST"]),
            Route("/admin/overview", overview),
            Route("/admin/history", history),
            Route("/admin/progress", progress_view),
            Route("/admin/whoami", whoami),
            Route("/admin/state", state_export),
            Route("/admin/state", writer(state_import), methods=["PUT"]),
            Route("/admin/routes/{name}/cohorts", cohorts_view),
            Route("/admin/routes/{name}/cohorts/{cohort}", cohort_members, methods=["GET"]),
            Route("/admin/routes/{name}/cohorts/{cohort}", writer(change_cohort), methods=["PUT"]),
            *console_routes(),
        ],
        exception_handlers=ERRORS,
    )
    admin.state.rt, admin.state.rollouts = rt, rollouts
    admin.state.shadow, admin.state.websockets = shadow, websockets
    admin.state.member_pages = MemberPages()
    admin.add_middleware(ViewerTokenGate, rt=rt)
    return HostGuard(admin, rt.settings.admin_allowed_hosts)
