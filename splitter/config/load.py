"""Reading routes.yaml: the file, the YAML, serve's --backend-url replacements, then the validator.

All problems of a file are collected, not just the first (validate.py); the YAML's own errors
name their line too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .doc import _Doc
from .model import Config, ConfigError
from .validate import _build


def load(path: str | Path, environment: str | None = None, backend_urls: BackendURLs = ()) -> Config:
    """Read and validate a routes.yaml; raise ConfigError naming file:line: key. `backend_urls` (serve
    --backend-url NAME=URL) replace the named backends' URLs on every load, reloads included, so one
    routes.yaml serves on other ports (make run's BASE_PORT) and stays the file people edit."""
    p = Path(path)
    name = str(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{name}:0: (file): not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{name}:0: (file): cannot read: {exc}"]) from None
    return parse(text, name, environment, backend_urls)


BackendURLs = tuple[tuple[str, str], ...]


def parse(
    text: str, filename: str = "routes.yaml", environment: str | None = None, backend_urls: BackendURLs = ()
) -> Config:
    doc = _Doc(filename)
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # the reader already rejects control characters
        node = loader.get_single_node()
        data = doc.plain(loader, node, "") if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else text[: getattr(exc, "position", 0)].count("\n") + 1
        problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or str(exc).splitlines()[0]
        raise ConfigError([f"{filename}:{line}: (yaml): invalid YAML: {problem}"]) from None
    except RecursionError:
        raise ConfigError([f"{filename}:1: (yaml): invalid YAML: nested too deeply"]) from None
    finally:
        if loader is not None:
            loader.dispose()
    if doc.errors:
        raise ConfigError(doc.errors)
    if not isinstance(data, dict):
        raise ConfigError(
            [f"{filename}:1: (top): must be a mapping with backends and routes, got an empty or non-mapping document"]
        )
    config = _build(doc, _with_urls(data, backend_urls, filename), environment)
    if doc.errors:
        raise ConfigError(doc.errors)
    assert config is not None
    return config


def _with_urls(data: dict[str, Any], backend_urls: BackendURLs, filename: str) -> dict[str, Any]:
    """routes.yaml's document with the given backends' URLs replaced (validated like the file's own)."""
    backends = data.get("backends")
    for name, url in backend_urls:
        if not isinstance(backends, dict) or not isinstance(backends.get(name), dict):
            raise ConfigError([f"{filename}:0: --backend-url {name}={url}: the file has no backend {name!r}"])
        backends = {**backends, name: {**backends[name], "url": url}}
    return {**data, "backends": backends} if backend_urls else data
