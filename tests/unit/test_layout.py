"""The house rules, checked: no import cycles (type-only imports included, so every module can
be read bottom-up); the environment is read in one place (cli.py, which turns it into
Settings); data flows down (runtime.py, the shared state, imports none of the layers that use
it; server.py does not import cli.py)."""

import ast

from conftest import ROOT

PKG = ROOT / "splitter"


def imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PKG.glob("*.py"):
        mod = path.stem
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    deps.add(node.module.split(".")[0])
                else:
                    deps.update(a.name for a in node.names if (PKG / f"{a.name}.py").exists())
        graph[mod] = deps - {"__init__", mod}
    return graph


def test_no_import_cycles_even_type_only():
    graph = imports()
    cycles = []

    def visit(mod: str, stack: list[str]) -> None:
        if mod in stack:
            cycles.append(stack[stack.index(mod) :] + [mod])
            return
        for dep in graph.get(mod, ()):
            visit(dep, stack + [mod])

    for mod in graph:
        visit(mod, [])
    assert cycles == [], cycles[:5]


def test_only_cli_reads_the_environment():
    readers = [p.name for p in PKG.glob("*.py") if "os.environ.get" in p.read_text() or "os.getenv" in p.read_text()]
    assert readers == ["cli.py"], readers


def test_data_flows_down_runtime_is_a_leaf_of_the_layers():
    graph = imports()
    assert not graph["runtime"] & {"app", "proxy", "admin", "guard", "rollout", "shadow", "server", "cli"}
    assert "cli" not in graph["server"]


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
