"""The documentation site: its reference pages match the code, it builds with `mkdocs build --strict`
(a broken link fails), and README stays one screen whose links land on pages that exist."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from types import ModuleType

import pytest
from conftest import PY, ROOT


def gen_docs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_reference_pages_are_what_the_code_generates():
    r = subprocess.run([PY, "scripts/gen_docs.py", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"{r.stderr}run: python scripts/gen_docs.py"


def test_a_key_a_metric_or_a_flag_changed_without_regenerating_fails_the_check_naming_its_page(
    monkeypatch, capsys
):
    from splitter import cli, config, metrics

    gen = gen_docs()
    assert gen.main(["--check"]) == 0
    monkeypatch.setitem(config.SECTIONS["rollout"], "docs_probe_s", {"type": "number", "exclusiveMinimum": 0})
    define = metrics.Metrics._define_control

    def with_one_more(self, reg, with_redis):
        define(self, reg, with_redis)
        metrics.Counter("splitter_docs_probe_total", "A metric the pages do not list.", registry=reg)

    monkeypatch.setattr(metrics.Metrics, "_define_control", with_one_more)
    build = cli.build_parser

    def with_a_flag():
        parser = build()
        parser.add_argument("--probe", help="a flag the pages do not list")
        return parser

    monkeypatch.setattr(cli, "build_parser", with_a_flag)
    assert gen.main(["--check"]) == 1
    err = capsys.readouterr().err
    for page in ("config.md", "metrics.md", "cli.md"):
        assert f"docs/reference/{page} is stale: run scripts/gen_docs.py" in err, err
    assert "admin.md" not in err, "only the pages whose source changed"


def test_the_generated_pages_list_every_key_metric_command_and_endpoint():
    from splitter import config

    names = ("config.md", "metrics.md", "cli.md", "admin.md")
    pages = {p: (ROOT / "docs" / "reference" / p).read_text() for p in names}
    for section, keys in config.SECTIONS.items():
        part = pages["config.md"].split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
        assert all(f"| `{key}` |" in part for key in keys), section
    for name in ("`splitter_requests_total`", "`splitter_request_duration_seconds`", "`splitter_redis_up`"):
        assert f"| {name} |" in pages["metrics.md"], name
    assert "| process_* | standard |" in pages["metrics.md"]
    for command in ("## splitter serve", "## splitter rollout", "## splitter cohort", "`--version`", "`--send-timeout"):
        assert command in pages["cli.md"], command
    rows = ("| PUT | `/admin/routes/{name}` | operator token |", "| GET | `/admin/history` |  |", "| GET | `/ui` |")
    for row in rows:
        assert row in pages["admin.md"], row


@pytest.fixture
def site(tmp_path):
    """A copy of the site's sources, to break on purpose."""
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    return tmp_path


def mkdocs_build(where, out):
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(where / "mkdocs.yml"), "-d", str(out)]
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


def test_the_site_builds_strict(tmp_path):
    r = mkdocs_build(ROOT, tmp_path / "site")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "site" / "quickstart" / "index.html").exists()
    assert (tmp_path / "site" / "reference" / "cli" / "index.html").exists()


def test_a_broken_link_fails_the_build(site, tmp_path):
    page = site / "docs" / "concepts.md"
    page.write_text(page.read_text() + "\nSee [the moon](moon.md).\n")
    r = mkdocs_build(site, tmp_path / "out")
    assert r.returncode != 0 and "moon.md" in r.stderr, r.stderr


def test_the_build_fetches_nothing():
    """Material's privacy and social plugins download at build time; the site uses neither, nor Google Fonts."""
    text = (ROOT / "mkdocs.yml").read_text()
    plugins = re.search(r"^plugins:\n((?:  .*\n)+)", text, re.M)
    assert plugins is not None and re.findall(r"- (\w+)", plugins.group(1)) == ["search"]
    assert re.search(r"^  font: false", text, re.M)


def test_readme_is_one_screen_with_the_two_commands_and_links_that_land():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 50, "README is one screen: the rest belongs in docs/"
    assert "make test" in text and "make run" in text, ".ci/run calls README's test command"
    links = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text)
    missing = [link for link in links if not (ROOT / link).is_file()]
    assert links and missing == []
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = sorted(p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md"))
    assert [p for p in pages if f": {p}\n" not in nav] == [], "every page is in the site's navigation"
