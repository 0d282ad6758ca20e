"""Strict JSON out: what the admin API, `--json` and `splitter report` answer.

RFC 8259 has no Infinity or NaN; Python's json writes them unless told not to, and
browsers' JSON.parse, jq and Go refuse the result. Here a non-finite float becomes
null: the meaning an open interval end already has in every answer (judge.py and
report.py build None for it), so a field added later cannot turn a read into a 500.
"""

from __future__ import annotations

import json
import math
from typing import Any


def dumps(obj: Any, **kwargs: Any) -> str:
    """json.dumps that never writes Infinity or NaN: the fast C encoder first, nulling only when it refuses."""
    try:
        return json.dumps(obj, allow_nan=False, **kwargs)
    except ValueError:
        return json.dumps(finite(obj), allow_nan=False, **kwargs)


def finite(obj: Any) -> Any:
    """A copy of a JSON-able value with every non-finite float replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj
