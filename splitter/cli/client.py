"""The admin API and Prometheus as the commands ask them: a URL is checked before anything is sent, an
unreachable or 5xx admin API is Transient (`--watch` and `rollout wait` retry), a 4xx says the API's error."""

from __future__ import annotations

import argparse
from typing import Any

from . import environ
from .common import OperatorError, Transient, fail, usage

DEFAULT_ADMIN = "http://127.0.0.1:8081"


def admin_url(args: argparse.Namespace) -> str:
    """--admin, else $SPLITTER_ADMIN_URL, else the default."""
    base = getattr(args, "admin", None) or environ.get("SPLITTER_ADMIN_URL") or DEFAULT_ADMIN
    return http_url(base, "--admin" if getattr(args, "admin", None) else "SPLITTER_ADMIN_URL")


def http_url(value: str, source: str) -> str:
    """A URL without http:// or without a host is a usage error (exit 2), before anything is sent:
    `localhost:8081` could be a scheme or a host, so it is never guessed."""
    from urllib.parse import urlsplit

    if not value.startswith(("http://", "https://")):
        usage(f"{source} {value!r} needs http:// (for example http://{value.split('://')[-1]})")
    base = value.rstrip("/")
    try:
        host = urlsplit(base).hostname
    except ValueError:
        host = None
    if not host:
        usage(f"{source} {base!r} names no host (for example {DEFAULT_ADMIN})")
    return base


def _admin(
    args: argparse.Namespace,
    method: str,
    path: str,
    body: Any = None,
    write: bool = False,
    answer_headers: dict[str, str] | None = None,
) -> Any:
    import httpx

    base = admin_url(args)
    # who makes a change is the token's name (the proxy decides), never $USER
    headers = {"X-Splitter-Source": "cli"}
    token = environ.get("SPLITTER_ADMIN_TOKEN")
    if write and not token:
        fail("SPLITTER_ADMIN_TOKEN is not set: export your admin token (an operator's, for changes)")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if write and getattr(args, "reason", None):
        body = {**(body or {}), "reason": args.reason}
    try:
        resp = httpx.request(method, base + path, json=body, headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        why = f"cannot reach the admin API at {base} ({type(exc).__name__}); is the proxy running? (--admin URL)"
        raise Transient(why) from None
    try:
        data = resp.json()
    except ValueError:
        data = None
    if resp.status_code >= 400:
        msg = data.get("error") if isinstance(data, dict) else None
        said = f"admin API answered {resp.status_code}: {msg or resp.text.strip()[:200]}"
        raise Transient(said) if resp.status_code >= 500 else OperatorError(said)
    if answer_headers is not None:
        answer_headers.update(resp.headers)
    return data


def _prometheus(base: str, queries: dict[str, str], at: float | None = None) -> dict[str, list[dict[str, Any]]]:
    """Each query's instant result (at `at`, else now); an unreachable or refusing Prometheus is one line."""
    import httpx

    results = {}
    for key, query in queries.items():
        params = {"query": query} if at is None else {"query": query, "time": f"{at:.3f}"}
        try:
            resp = httpx.get(base + "/api/v1/query", params=params, timeout=10)
            body = resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            fail(f"cannot query Prometheus at {base} ({type(exc).__name__})")
        if body.get("status") != "success":
            fail(f"Prometheus answered {resp.status_code}: {body.get('error', resp.text[:200])}")
        results[key] = body["data"]["result"]
    return results


def _admin_base(args: argparse.Namespace) -> str:
    return admin_url(args)


def _known_route(args: argparse.Namespace, name: str) -> None:
    """Exit 1 naming the routes the proxy knows when `name` is none of them: for the commands whose
    admin answer would not say so by itself (an empty history, a listing without the route)."""
    known = [r["name"] for r in _admin(args, "GET", "/admin/routes")]
    if name not in known:
        fail(f"unknown route {name!r} (routes: {', '.join(known)})")
