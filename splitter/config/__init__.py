"""routes.yaml -> frozen Config.

    model.py             the frozen dataclasses and the constants they share; percents (`as_percent`)
    keys.py              SECTIONS, the key table: the validator's allowed keys, the JSON Schema, the docs
    doc.py               YAML as plain data with the line of every key path; the checks sections share
    load.py              load(path) / parse(text): read, apply --backend-url, validate
    validate.py          the top level and the global sections
    validate_route.py    a route's keys (percent, sides, cohorts, guard, shadow)
    validate_rollout.py  a route's rollout section (steps, gates, hooks)

Every problem is reported as ``file:line: key.path: message`` so an operator can jump straight to
it; all problems of a file are collected, not just the first. The names other modules use are
re-exported here: `from splitter.config import Route`, `config.load(path)`.
"""

from .keys import SECTIONS, json_schema
from .load import load, parse
from .model import (
    MAX_COHORT_MEMBERS,
    PERCENT_RULE,
    ROLES,
    UID_COOKIE,
    Backend,
    Cohort,
    Config,
    ConfigError,
    Gates,
    GuardSpec,
    Hook,
    IdSource,
    NotifyTarget,
    Percent,
    PromGate,
    RedisHA,
    RolloutSpec,
    Route,
    ShadowSpec,
    as_percent,
    parse_percent,
)

__all__ = [
    "MAX_COHORT_MEMBERS",
    "PERCENT_RULE",
    "ROLES",
    "SECTIONS",
    "UID_COOKIE",
    "Backend",
    "Cohort",
    "Config",
    "ConfigError",
    "Gates",
    "GuardSpec",
    "Hook",
    "IdSource",
    "NotifyTarget",
    "Percent",
    "PromGate",
    "RedisHA",
    "RolloutSpec",
    "Route",
    "ShadowSpec",
    "as_percent",
    "json_schema",
    "load",
    "parse",
    "parse_percent",
]
