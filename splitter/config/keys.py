"""The key table: every routes.yaml section and the keys it allows, as JSON Schema fragments.

One table for the validator (which keys each section allows), `json_schema()` (what editors
check), `splitter schema` and the documentation (scripts/gen_docs.py), so they cannot disagree.
"""

from __future__ import annotations

from typing import Any

from .model import ANONYMOUS, BACKENDS, CHANGE_ACTIONS, ID_KINDS, MAX_COHORT_MEMBERS, NOTIFY_FORMATS, ROLES

# The shape of routes.yaml, one table for both the validator (which keys each section allows)
# and `json_schema()` (what editors check as ops type). A string value names another section.
_POSITIVE: dict[str, Any] = {"type": "number", "exclusiveMinimum": 0}
_RATE: dict[str, Any] = {"type": "number", "minimum": 0, "maximum": 1}
_COUNT: dict[str, Any] = {"type": "integer", "minimum": 0}
_PERCENT: dict[str, Any] = {"type": "number", "minimum": 0, "maximum": 100, "multipleOf": 0.01}
_STRINGS: dict[str, Any] = {"type": "array", "items": {"type": "string"}}
_CONFIDENCE: dict[str, Any] = {"type": "number", "minimum": 0.5, "maximum": 0.999}
_STEP: dict[str, Any] = {"type": "number", "exclusiveMinimum": 0, "maximum": 100, "multipleOf": 0.01}
SECTIONS: dict[str, dict[str, Any]] = {
    "top": {
        "environment": {"type": "string"},
        "backends": "backends",
        "user_id": {
            "type": "array",
            "items": {
                "type": "object",
                "minProperties": 1,
                "maxProperties": 1,
                "additionalProperties": False,
                "properties": {k: {"type": "string", "minLength": 1} for k in ID_KINDS},
            },
        },
        "anonymous": {"enum": list(ANONYMOUS)},
        "routes": {"type": "array", "items": {"$ref": "#/$defs/route"}},
        "unmatched": {"enum": list(ROLES)},
        "redis": {"oneOf": [{"type": "null"}, {"$ref": "#/$defs/redis"}]},
        "trusted_proxies": _STRINGS,
        "max_body_bytes": {"type": "integer", "minimum": 1},
        "websocket": "websocket",
        "notify": {"type": "array", "items": {"$ref": "#/$defs/notify"}},
        "admin": "admin",
        "state": "state",
    },
    "notify": {
        "url": {"type": "string", "pattern": "^https?://"},
        "url_env": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
        "events": {"type": "array", "items": {"enum": list(CHANGE_ACTIONS)}},
        "format": {"enum": list(NOTIFY_FORMATS)},
    },
    "admin": {"reads": {"enum": ["open", "token"]}, "single_token": {"type": "boolean"}},
    "state": {"path": {"type": "string", "minLength": 1}},
    "websocket": {"max_message_bytes": {"type": "integer", "minimum": 1}, "idle_timeout_s": _POSITIVE},
    "backends": {name: "backend" for name in BACKENDS},
    "backend": {
        "url": {"type": "string", "pattern": "^https?://"},
        "connect_timeout": _POSITIVE,
        "read_timeout": _POSITIVE,
        "max_connections": {"type": "integer", "minimum": 1},
        "check_request_id": {"type": "boolean"},
        "idle_timeout_s": _POSITIVE,
    },
    "redis": {
        "url": {"type": "string", "pattern": "^(redis|rediss|unix)://"},
        "prefix": {"type": "string", "minLength": 1},
        "sentinels": {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": "^[^:]+:[0-9]+$"}},
        "service": {"type": "string", "minLength": 1},
        "db": {"type": "integer", "minimum": 0},
        "password_env": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
        "username_env": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
        "tls": {"type": "boolean"},
    },
    "route": {
        "name": {"type": "string", "pattern": "^[a-z0-9_]+$"},
        "prefix": {"type": "string", "pattern": "^/"},
        "percent": {"oneOf": [_PERCENT, {"type": "object", "minProperties": 1, "additionalProperties": _PERCENT}]},
        "salt": {"type": "string"},
        "guard": "guard",
        "shadow": "shadow",
        "rollout": "rollout",
        "new": {"type": "string", "pattern": "^[a-z0-9_]+$"},
        "legacy": {"type": "string", "pattern": "^[a-z0-9_]+$"},
        "cohorts": {"type": "array", "items": {"$ref": "#/$defs/cohort"}},
    },
    "cohort": {
        "name": {"type": "string", "pattern": "^[a-z0-9_]+$"},
        "to": {"enum": list(ROLES)},
        "header": {"type": "string", "minLength": 1},
        "cookie": {"type": "string", "minLength": 1},
        "jwt_claim": {"type": "string", "minLength": 1},
        "users": {"type": "array", "maxItems": MAX_COHORT_MEMBERS, "items": {"type": ["string", "integer"]}},
        "equals": {"type": ["string", "integer"]},
        "in": {"type": "array", "minItems": 1, "items": {"type": ["string", "integer"]}},
        "prefix": {"type": "string", "minLength": 1},
        "suffix": {"type": "string", "minLength": 1},
        "trusted": {"type": "boolean"},
    },
    "guard": {
        "max_error_rate": _RATE,
        "min_requests": _COUNT,
        "window_s": _POSITIVE,
        "max_p95_ratio": _POSITIVE,
        "max_error_increase": _RATE,
        "confidence": _CONFIDENCE,
    },
    "shadow": {"percent": _PERCENT, "methods": _STRINGS, "ignore": _STRINGS, "headers": _STRINGS},
    "rollout": {
        "steps": {"type": "array", "minItems": 1, "items": {"oneOf": [_STEP, {"$ref": "#/$defs/step"}]}},
        "interval_s": _POSITIVE,
        "max_wait_s": _POSITIVE,
        "bake_s": {"type": "number", "minimum": 0},
        "retire_after_s": _POSITIVE,
        "before_step": {"type": "array", "items": {"$ref": "#/$defs/hook"}},
        "gates": "gates",
    },
    "hook": {"url": {"type": "string", "pattern": "^https?://"}, "timeout_s": _POSITIVE, "retries": _COUNT},
    "step": {"percent": _STEP, "approval": {"type": "boolean"}},
    "gates": {
        "max_error_rate": _RATE,
        "max_p95_ms": _POSITIVE,
        "max_p95_ratio": _POSITIVE,
        "min_requests": _COUNT,
        "max_error_increase": _RATE,
        "confidence": _CONFIDENCE,
        "p95_tolerance_ms": {"type": "number", "minimum": 0},
        "no_new_errors": {"type": "boolean"},
        "no_new_errors_statuses": {"type": "array", "items": {"type": "integer", "minimum": 100, "maximum": 599}},
        "max_mismatch_rate": _RATE,
        "prometheus": {"type": "array", "items": {"$ref": "#/$defs/prometheus_gate"}},
    },
    "prometheus_gate": {
        "name": {"type": "string", "pattern": "^[a-z0-9_]+$"},
        "query": {"type": "string", "minLength": 1},
        "min_ratio": {"type": "number"},
        "max_ratio": {"type": "number"},
        "min": {"type": "number"},
        "max": {"type": "number"},
    },
}
REQUIRED = {
    "top": ["backends", "routes"],
    "backends": list(BACKENDS),
    "backend": ["url"],
    "route": ["name", "prefix", "percent"],
    "cohort": ["name", "to"],
    "rollout": ["steps"],
    "step": ["percent"],
    "hook": ["url"],
    "prometheus_gate": ["name", "query"],
}
_TOP_KEYS = set(SECTIONS["top"])
_ROUTE_KEYS = set(SECTIONS["route"])


def json_schema() -> dict[str, Any]:
    """routes.yaml as a JSON Schema (draft 2020-12), from the same table the validator uses.
    The validator checks more (duplicates, percent maps naming the same environments, URLs)."""

    def obj(section: str) -> dict[str, Any]:
        props = {k: {"$ref": f"#/$defs/{v}"} if isinstance(v, str) else v for k, v in SECTIONS[section].items()}
        out: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": props}
        if section in REQUIRED:
            out["required"] = REQUIRED[section]
        if section == "backends":  # an open map of names; legacy and new are the defaults, so required
            out["additionalProperties"] = {"$ref": "#/$defs/backend"}
            out["propertyNames"] = {"pattern": "^[a-z0-9_]+$"}
        return out

    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "splitter routes.yaml", **obj("top")}
    schema["$defs"] = {name: obj(name) for name in SECTIONS if name != "top"}
    return schema
