"""The house rules, checked: no import cycles (type-only imports included, so every module can
be read bottom-up; a package such as cli/ or config/ is one node); the environment is read in one
place (cli/environ.py, for the CLI, which turns it into Settings); data flows down (runtime.py, the
shared state, imports none of the layers that use it; listen/ does not import cli)."""

import ast
from pathlib import Path

from conftest import ROOT

PKG = ROOT / "splitter"


def module_of(path: Path) -> str:
    """`admin/routes.py` -> "admin.routes"; a package's `__init__.py` is the package ("admin"), the root ""."""
    parts = path.relative_to(PKG).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Top-level module or package -> those it imports (relative imports, nested and type-only ones
    included). A package is one node: its modules' imports are its own, those between them dropped."""
    graph: dict[str, set[str]] = {}
    for path in PKG.rglob("*.py"):
        mod = module_of(path)
        package = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level >= 1:
                base = package[: len(package) - node.level + 1]
                if node.module:
                    deps.add(base[0] if base else node.module.split(".")[0])
                elif base:  # `from . import x` inside a package: the package itself
                    deps.add(base[0])
                else:  # `from . import judge` at the top: a module, or a name of splitter/__init__.py
                    deps.update(a.name for a in node.names if (PKG / f"{a.name}.py").exists() or (PKG / a.name).is_dir())
        if mod:
            name = mod.split(".")[0]
            graph[name] = graph.get(name, set()) | deps - {"__init__", name}
    return graph


def package_imports(package: str) -> dict[str, set[str]]:
    """Inside one package (cli, config, store): module -> the package's modules it imports (`from .x`)."""
    graph: dict[str, set[str]] = {}
    for path in (PKG / package).glob("*.py"):
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                names = [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
                deps.update(n for n in names if (PKG / package / f"{n}.py").exists())
        graph[path.stem] = deps - {"__init__", path.stem}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found = []

    def visit(mod: str, stack: list[str]) -> None:
        if mod in stack:
            found.append(stack[stack.index(mod) :] + [mod])
            return
        for dep in graph.get(mod, ()):
            visit(dep, stack + [mod])

    for mod in graph:
        visit(mod, [])
    return found


def test_no_import_cycles_even_type_only():
    assert cycles(imports()) == [], cycles(imports())[:5]
    packages = sorted(p.parent.name for p in PKG.glob("*/__init__.py"))
    assert {"cli", "config"} <= set(packages)
    for package in packages:
        graph = package_imports(package)
        assert cycles(graph) == [], (package, cycles(graph)[:5])


def test_only_cli_reads_the_environment():
    readers = [
        str(p.relative_to(PKG))
        for p in sorted(PKG.rglob("*.py"))
        if "os.environ.get" in p.read_text() or "os.getenv" in p.read_text()
    ]
    assert readers == ["cli/environ.py"], readers


def test_data_flows_down_runtime_is_a_leaf_of_the_layers():
    graph = imports()
    assert not graph["runtime"] & {"app", "proxy", "admin", "guard", "rollout", "shadow", "listen", "cli"}
    assert "cli" not in graph["listen"]
    assert not graph["proxy"] & {"listen", "app"}, "the proxy is an ASGI app: it knows the connection only as bypass.py's"


def test_no_private_uvicorn_name_is_used():
    """splitter's own HTTP protocol runs under uvicorn.Server through its public hooks (Config(http=...)):
    no uvicorn class replaced, no underscore name imported, so uvicorn is not pinned to a minor version."""
    used = []
    for path in sorted(PKG.rglob("*.py")):
        text = path.read_text()
        if "httptools_impl" in text or "RequestResponseCycle" in text:
            used.append(f"{path.relative_to(ROOT)}: uvicorn's httptools protocol")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("uvicorn"):
                private = [a.name for a in node.names if a.name.startswith("_")] + [
                    m for m in (node.module or "").split(".") if m.startswith("_")
                ]
                if private:
                    used.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.module} {private}")
    assert used == []


def test_no_function_in_the_package_is_longer_than_80_lines():
    """A function that does not fit on a screen does more than one thing; split it into named steps."""
    long = []
    for path in sorted(PKG.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if lines > 80:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []


def test_only_the_redis_store_imports_redis():
    """The store is chosen once at start (store/__init__.py); nothing above it knows Redis is there."""
    importers = []
    for path in sorted(PKG.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            if any(n == "redis" or n.startswith("redis.") for n in names):
                importers.append(str(path.relative_to(PKG)))
    assert sorted(set(importers)) == ["store/redis.py"], importers


PROCESS_FIXTURES = {"procs", "standin", "splitter", "redis_server", "browser", "browser_page", "receiver", "postgres"}


def test_no_unit_test_asks_for_a_process_starting_fixture():
    """tests/unit is the edit loop: a test whose fixtures start a process belongs in tests/integration
    (conftest.py also fails one that starts a process or listens on a socket while it runs)."""
    found = []
    for path in sorted((ROOT / "tests" / "unit").glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                used = {a.arg for a in node.args.args} & PROCESS_FIXTURES
                if used:
                    found.append(f"{path.name}::{node.name} {sorted(used)}")
    assert found == [], found
    assert len(list((ROOT / "tests" / "unit").glob("test_*.py"))) >= 10, "the tier exists"
