"""The admin listener: /metrics, /healthz, /readyz and /admin/*.

Reads are open (the listener binds to 127.0.0.1 by default); every mutation
needs `Authorization: Bearer $SPLITTER_ADMIN_TOKEN`. `HostGuard` wraps the whole
app: a `Host` that is not an IP literal, `localhost` or a name in
`--admin-allowed-hosts` gets 403, so a page on a rebound DNS name cannot read the
API from an operator's browser (Django's ALLOWED_HOSTS, Starlette's
TrustedHostMiddleware); every answer carries `X-Content-Type-Options: nosniff`.
Reads are open (the listener binds to 127.0.0.1 by default) unless routes.yaml says
`admin: {reads: token}` (then /admin/* reads need a viewer token; /metrics, /healthz,
/readyz and the console's static files stay open). Every mutation needs an operator's
`Authorization: Bearer <token>` (tokens.py); the token's name is who made the change, and
each change is one history event (history.py) with the body's optional `reason`.

The package: security (the Host guard, tokens, the read gate, `writer`), common (what the endpoints
share: answers, errors, the app's state), the endpoints by what they serve (status, routes, rollouts, judged,
cohorts, migration: history, progress and state), overview (the console's one read), app (`create_admin`).
"""

from .app import create_admin

__all__ = ["create_admin"]
