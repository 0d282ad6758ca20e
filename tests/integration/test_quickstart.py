"""docs/quickstart.md, followed command by command: `make run`'s stack (scripts/demo.sh, on a fresh
database and state file), then every `$ ` line of the page's ```console blocks in one bash session, in
order, each output compared with the lines the page shows under it (`...` alone on a line: any lines;
within a line: any text; runs of spaces: any spaces, so a column's width may change)."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import FIXED_PORTS, ROOT, ports_in_use, wait_http

PAGE = ROOT / "docs" / "quickstart.md"
PORTS = (8001, 8002, 8003, 8080, 8081, 8090, 8091)  # the demo's, and the rollout example's splitter


def steps(text: str) -> list[tuple[str, list[str]]]:
    """(command, expected output lines) from the page's console blocks, in order."""
    out: list[tuple[str, list[str]]] = []
    for block in re.findall(r"^```console\n(.*?)^```", text, re.S | re.M):
        for line in block.splitlines():
            if line.startswith("$ "):
                out.append((line[2:], []))
            else:
                assert out, f"output before any command: {line!r}"
                out[-1][1].append(line)
    return out


def line_pattern(expected: str) -> re.Pattern[str]:
    parts = [r"\s+".join(re.escape(word) for word in piece.split()) for piece in expected.split("...")]
    return re.compile(r"\s*" + ".*".join(parts) + r"\s*")


def matches(expected: list[str], actual: list[str]) -> bool:
    if not expected:
        return not actual
    if expected[0] == "...":
        return any(matches(expected[1:], actual[i:]) for i in range(len(actual) + 1))
    first = bool(actual) and line_pattern(expected[0]).fullmatch(actual[0]) is not None
    return first and matches(expected[1:], actual[1:])


def test_the_matcher_takes_elisions_and_column_widths_and_nothing_else():
    assert matches(["a:  1 ...", "...", "end"], ["a: 1 at 13:00", "x", "y", "end"])
    assert matches(["...", "end"], ["end"]) and matches([], [])
    assert not matches(["a: 1"], ["a: 2"]) and not matches(["a"], ["a", "b"]) and not matches(["a", "b"], ["a"])


class Shell:
    """One bash session, as a reader types into a terminal: exports and background jobs carry over."""

    def __init__(self, cwd: Path, env: dict[str, str], log: Path) -> None:
        self.err = open(log, "wb")  # noqa: SIM115 - closed in close()
        self.p = subprocess.Popen(["bash", "--norc", "--noprofile"], cwd=cwd, env=env, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=self.err, start_new_session=True)
        self.n = 0

    def run(self, command: str, timeout: float) -> tuple[list[str], int]:
        self.n += 1
        mark = f"__quickstart_step_{self.n}__"
        assert self.p.stdin is not None and self.p.stdout is not None
        self.p.stdin.write(f"{command}\n__rc=$?; printf '\\n{mark} %s\\n' \"$__rc\"\n".encode())
        self.p.stdin.flush()
        buf, deadline = b"", time.monotonic() + timeout
        while (m := re.search(rb"\n" + mark.encode() + rb" (\d+)\n", buf)) is None:
            left = deadline - time.monotonic()
            assert left > 0, f"{command!r} still running after {timeout} s; so far:\n{buf.decode()}"
            if select.select([self.p.stdout], [], [], left)[0]:
                chunk = os.read(self.p.stdout.fileno(), 65536)
                assert chunk, f"bash ended during {command!r}:\n{buf.decode()}"
                buf += chunk
        return buf[: m.start()].decode().splitlines(), int(m.group(1))

    def close(self) -> None:
        """The session and what it started in the background (no job control: one process group)."""
        try:
            os.killpg(self.p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        self.p.wait(10)
        for pipe in (self.p.stdin, self.p.stdout, self.err):
            if pipe is not None:
                pipe.close()


def start_demo(tmp_path: Path) -> subprocess.Popen[bytes]:
    """`make run`, as tests/integration/test_demo.py starts it: scripts/demo.sh on a fresh database and state file."""
    env = {**os.environ, "PY": sys.executable, "DATABASE_URL": f"sqlite:///{tmp_path}/demo.db",
           "UPLOAD_DIR": str(tmp_path / "up"), "SPLITTER_STATE": str(tmp_path / "state.db")}
    log = open(tmp_path / "demo.log", "wb")  # noqa: SIM115 - the child holds it
    p = subprocess.Popen(["bash", str(ROOT / "scripts" / "demo.sh")], cwd=ROOT, env=env, stdout=log,
                         stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    ready = [f"http://127.0.0.1:{port}/health" for port in (8001, 8002, 8003)] + ["http://127.0.0.1:8081/readyz"]
    try:
        for url in ready:  # ready, not just listening
            wait_http(url, timeout=60, proc=p)
    except RuntimeError as exc:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)
        raise AssertionError(f"{exc}\n{(tmp_path / 'demo.log').read_text()}") from exc
    return p


@FIXED_PORTS
def test_the_quickstart_page_runs_as_written(tmp_path):
    text = PAGE.read_text()
    first = re.search(r"^```sh\n(.*?)^```", text, re.S | re.M)
    assert first is not None and first.group(1).strip() == "make run", "the page starts the stack the test starts"
    assert re.search(r"^run: .*\n(\t.*\n)*\t.*scripts/demo\.sh", (ROOT / "Makefile").read_text(), re.M)
    busy = ports_in_use(PORTS)
    assert not busy, f"ports {busy} are taken; stop what runs there to test the quickstart"
    # the reader's clone: .venv (this interpreter's environment) and examples/; what the page writes lands here
    (tmp_path / "clone").mkdir()
    (tmp_path / "clone" / ".venv").symlink_to(Path(sys.executable).parent.parent)
    (tmp_path / "clone" / "examples").symlink_to(ROOT / "examples")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPLITTER_")}
    demo = start_demo(tmp_path)
    shell = Shell(tmp_path / "clone", env, tmp_path / "stderr.log")
    try:
        for command, expected in steps(text):
            actual, rc = shell.run(command, timeout=150)
            why = f"$ {command}\nexit {rc}; expected:\n" + "\n".join(expected) + "\ngot:\n" + "\n".join(actual)
            assert rc == 0 and matches(expected, actual), why + "\nstderr:\n" + (tmp_path / "stderr.log").read_text()
    finally:
        shell.close()
        os.killpg(demo.pid, signal.SIGINT)
        try:
            demo.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait(10)
        ports_in_use(PORTS)  # the next fixed-port test starts once everything here has let go of its port
