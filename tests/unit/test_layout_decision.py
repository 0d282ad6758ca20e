"""One decision: the rules that keep who-serves-a-request in decide.py alone, checked on the
source (an AST walk of splitter/**/*.py).

What is checked, and what is not:
- only decide.py compares a bucket with a percent (a comparison with a name or attribute
  holding "bucket" on one side and "percent"/"pct" on the other) or calls bucketing.is_new
  (which states the formula, `bucket < percent`);
- the request path (plan, proxy, websocket, shadow, record, outcomes) and the CLI never read the kill switch
  (`.kill`); admin's `bucket_view`, the CLI's `_bucket_rows` and plan's `choose` call decide();
- the configured backends (`cfg.backends[...]`, `config.backends[...]`) are never indexed by a
  string literal nor by a role (`.role`) outside config/: by the name a route resolved its
  role to at load (`Route.backends`). A role held in a plain variable is not caught.
"""

import ast

from conftest import ROOT

PKG = ROOT / "splitter"


def trees() -> dict[str, ast.Module]:
    """Path under splitter/ (`decide.py`, `cli/check.py`) -> its syntax tree."""
    return {str(p.relative_to(PKG)): ast.parse(p.read_text()) for p in sorted(PKG.rglob("*.py"))}


def _names(node: ast.AST) -> str:
    """The identifiers an operand reads, lower-cased: `snap.percent[r.name]` -> "percent name snap r"."""
    nodes = [n for n in ast.walk(node) if isinstance(n, ast.Name | ast.Attribute)]
    return " ".join(n.id if isinstance(n, ast.Name) else n.attr for n in nodes).lower()


def _dotted(node: ast.AST) -> str:
    """`rt.snapshot.config.backends` as written; "?" for anything but names and attributes."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def test_only_decide_compares_a_bucket_with_a_percent():
    found = []
    for name, tree in trees().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                sides = [_names(node.left), *(_names(c) for c in node.comparators)]
                if any("bucket" in s for s in sides) and any("percent" in s or "pct" in s for s in sides):
                    found.append(f"{name}:{node.lineno}")
            elif isinstance(node, ast.Call) and "is_new" in _names(node.func).split():
                found.append(f"{name}:{node.lineno}")
    assert any(f.startswith("decide.py:") for f in found), "decide() applies the rule"
    others = [f for f in found if not f.startswith(("decide.py:", "bucketing.py:"))]  # bucketing: is_new itself
    assert others == [], found


def test_the_request_path_and_the_views_leave_the_kill_switch_and_percent_to_decide():
    t = trees()
    cli = [name for name in t if name.startswith("cli/")]
    assert "cli/status.py" in cli
    for name in ("plan.py", "proxy.py", "websocket.py", "shadow.py", "record.py", "outcomes.py", *cli):
        reads = [n.lineno for n in ast.walk(t[name]) if isinstance(n, ast.Attribute) and n.attr == "kill"]
        assert reads == [], f"{name} reads the kill switch at lines {reads}"
    views = {"admin/routes.py": "bucket_view", "cli/check.py": "_bucket_rows", "plan.py": "choose"}
    for name, func in views.items():
        fn = next(n for n in ast.walk(t[name]) if isinstance(n, ast.FunctionDef) and n.name == func)
        calls = {_names(n.func) for n in ast.walk(fn) if isinstance(n, ast.Call)}
        assert "decide" in calls, f"{name}:{func} does not call decide()"


def test_backends_are_looked_up_by_name_never_by_a_literal_or_a_role_outside_config():
    found = []
    for name, tree in trees().items():
        for node in ast.walk(tree):
            target = _dotted(node.value) if isinstance(node, ast.Subscript) else ""
            if target.endswith(("cfg.backends", "config.backends")):  # Config.backends: name -> Backend
                key = node.slice
                literal = isinstance(key, ast.Constant) and isinstance(key.value, str)
                by_role = isinstance(key, ast.Attribute) and key.attr == "role"
                if literal or (by_role and not name.startswith("config/")):
                    found.append(f"{name}:{node.lineno}")
    assert found == [], found
    lookups = [
        f"{n}:{x.lineno}"
        for n, t in trees().items()
        for x in ast.walk(t)
        if isinstance(x, ast.Subscript) and _dotted(x.value).endswith(("cfg.backends", "config.backends"))
    ]
    assert len(lookups) >= 3, "the check sees the proxy's, the WebSocket path's and the shadow's lookups"
