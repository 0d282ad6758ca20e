"""The differential framing suite (issue 32): one proxy, an independent strict parser (h11) on the far
side of it, a corpus of mutations (corpus.py), and one rule.

Requests: either the proxy refuses one (a 4xx) and the upstream sees nothing of it, or the upstream
parses exactly the requests the proxy parsed — matched by X-Request-ID between the proxy's access log
and the recorder — with the same method, target and body bytes, and nothing more (no smuggled request,
no parse error after one). Where h11 also accepts the client's bytes as a server would, the body the
upstream got is the one h11 reads. Answers: either the proxy answers 502 (JSON, counted) or the client
(h11's client role) reads exactly the answer h11 reads in the upstream's bytes, and a second request on
the same client connection gets its own answer.

All divergences are reported at once, each with its mutation's name and what differed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import h11
import httpx
import oracle
import pytest
from conftest import PY, Proc, Splitter, eventually, free_port, routes_yaml, wait_http
from corpus import Answer, Mutation, answer_mutations, request_mutations
from recorder import ParseError, Raw, Recorder, named

from splitter.proxy import normalize_path

pytestmark = pytest.mark.xdist_group("framing_rig")  # one worker runs the module: the rig starts once

REQUESTS = request_mutations()
ANSWERS = answer_mutations()
PARALLEL = 24  # client connections at once: the quiet waits overlap, the 2-core machine is not swamped
QUIET = 1.0  # s without a byte from the proxy: it answers no more on this connection
ANSWER_QUIET = 5.0  # the same, past the backend's read_timeout (2 s): an answer that never ends is cut by then


@dataclass
class Rig:
    recorder: Recorder
    proxy: Splitter


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """One recorder and one proxy for the whole module."""
    tmp = tmp_path_factory.mktemp("framing")
    recorder = Recorder({b"/a/%d" % j: Raw(a.data, a.eof) for j, a in enumerate(ANSWERS)})
    cfg = tmp / "routes.yaml"
    cfg.write_text(routes_yaml(recorder.url, recorder.url, routes="  - name: m\n    prefix: /m\n    percent: 0"))
    port, admin = free_port(), free_port()
    args = ["--config", str(cfg), "--host", "127.0.0.1", "--port", str(port), "--admin-port", str(admin)]
    proc = Proc([PY, "-m", "splitter", "serve", *args], log=tmp / "splitter.log")
    try:
        wait_http(f"http://127.0.0.1:{admin}/readyz", proc=proc.p)
        yield Rig(recorder, Splitter(proc, port, admin, cfg))
    finally:
        proc.stop()
        recorder.stop()


# --- the client side ------------------------------------------------------------------------------------
@dataclass
class Seen:
    """What the client read: each final answer (status, body) and the error that ended its reading."""

    answers: list[tuple[int, bytes]] = field(default_factory=list)
    error: str | None = None
    open: bool = False  # the connection may carry another request
    cut: bool = False  # the connection closed inside an answer (after its head: the proxy's abort)


async def _read_answers(
    reader: asyncio.StreamReader, client: h11.Connection, methods: list[bytes], seen: Seen, quiet: float = QUIET
) -> None:
    """h11 reads the proxy's answers to `methods` (sent in order), until all are in, the connection ends,
    or the proxy says nothing for `quiet` s."""
    status, body = 0, b""
    while methods:
        event = client.next_event()
        if event is h11.NEED_DATA:
            try:
                data = await asyncio.wait_for(reader.read(65536), quiet)
            except TimeoutError:
                return
            if not data and client.their_state is h11.SEND_BODY:
                seen.cut = True  # closed inside an answer's body: the proxy aborted it (h11 would call it an error)
                return
            client.receive_data(data)
        elif isinstance(event, h11.Response):
            status, body = event.status_code, b""
        elif isinstance(event, h11.Data):
            body += bytes(event.data)
        elif isinstance(event, h11.EndOfMessage):
            seen.answers.append((status, body))
            methods.pop(0)
            if client.our_state is not h11.DONE or client.their_state is not h11.DONE:
                return  # the proxy closes this connection
            client.start_next_cycle()
            seen.open = True
            if methods:
                client.send(h11.Request(method=methods[0], target="/", headers=[("host", "proxy")]))
                client.send(h11.EndOfMessage())
        elif isinstance(event, h11.ConnectionClosed):
            return


async def send(port: int, data: bytes, methods: tuple[bytes, ...]) -> Seen:
    """Write `data` (requests written by hand) and read the answers to the requests it means to send."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    client = h11.Connection(h11.CLIENT)  # told of each request by method only: its bytes are the mutation's
    client.send(h11.Request(method=methods[0], target="/", headers=[("host", "proxy")]))
    client.send(h11.EndOfMessage())
    seen = Seen()
    try:
        writer.write(data)
        await _read_answers(reader, client, list(methods), seen)
    except h11.RemoteProtocolError as exc:
        seen.error = f"h11 refuses the proxy's answer: {exc}"
    except ConnectionError:
        pass
    finally:
        writer.close()
    return seen


def run_all(port: int, jobs: list[tuple[bytes, tuple[bytes, ...]]]) -> list[Seen]:
    async def main() -> list[Seen]:
        gate = asyncio.Semaphore(PARALLEL)

        async def one(data: bytes, methods: tuple[bytes, ...]) -> Seen:
            async with gate:
                return await send(port, data, methods)

        return await asyncio.gather(*(one(d, m) for d, m in jobs))

    return asyncio.run(main())


def settled(proxy: Splitter) -> list[dict[str, Any]]:
    """The access log once every request has ended (none in flight) and its lines are written."""
    eventually(lambda: proxy.metric("splitter_requests_in_flight") == 0, timeout=10)
    end = f"/m/end-{time.monotonic_ns()}"  # its own marker: an earlier test's would be found at once
    assert httpx.get(proxy.url + end).status_code == 200
    proxy.wait_log(lambda e: e.get("path") == end, timeout=10)
    return [e for e in proxy.logs() if e.get("event") == "request"]


# --- the rule, for requests -----------------------------------------------------------------------------
def _same_target(upstream: bytes, h11_target: bytes) -> bool:
    path, _, query = h11_target.partition(b"?")
    normal = normalize_path(path.split(b"#")[0]) if path.startswith(b"/") else None
    return upstream == h11_target or (normal is not None and upstream == normal[0] + (b"?" + query if query else b""))


def _blames(e: ParseError, prefix: bytes) -> bool:
    """A parse error belongs to the mutation whose bytes it is in, else to the request before it."""
    return prefix in e.raw if b"/m/" in e.raw else e.after is not None and prefix in e.after


def request_divergences(m: Mutation, lines: list[dict[str, Any]], rec: Recorder, seen: Seen) -> list[str]:
    prefix = m.prefix.encode()
    mine = [e for e in lines if e["path"].startswith(m.prefix)]
    ids = {e["request_id"].encode(): e for e in mine}
    got = [r for r in rec.requests if prefix in r.target or r.header(b"x-request-id") in ids]
    out = [f"upstream h11 error ({e.error}) in {e.raw!r}, after {e.after!r}" for e in rec.errors if _blames(e, prefix)]
    for r in got:
        if r.header(b"x-request-id") not in ids:
            out.append(f"upstream parsed {r.method!r} {r.target!r} (body {r.body!r}) that the proxy never parsed")
    for e in mine:
        out += _one_line(e, [r for r in got if r.header(b"x-request-id") == e["request_id"].encode()])
    strict = oracle.requests(m.data)
    if strict.error is None:
        for r in got:
            match = [p for p in strict.parsed if p.complete and _same_target(r.target, p.target)]
            if r.complete and not match:
                out.append(f"upstream parsed {r.method!r} {r.target!r}; h11 reads no such request in the client's")
            elif r.complete and (match[0].body != r.body or match[0].method != r.method):
                h = match[0]
                out.append(f"{r.target!r}: upstream got {r.method!r} {r.body!r}, h11 reads {h.method!r} {h.body!r}")
    for status, body in seen.answers:
        if status == 200 and body and prefix not in body:
            out.append(f"the client got an answer that is not to its own requests: {body[:200]!r}")
    if seen.error:
        out.append(seen.error)
    return out


def _one_line(e: dict[str, Any], got: list[oracle.Parsed]) -> list[str]:
    """One request the proxy logged against what the upstream parsed with its X-Request-ID."""
    what = f"{e['method']} {e['path']} (logged {e['status']} {e.get('error') or ''})"
    refused = e["status"] < 500 and e.get("error") not in (None, "client_abort")
    if refused and got:
        return [f"{what}: refused, yet the upstream parsed {[(r.method, r.target, r.body) for r in got]}"]
    if len(got) > 1:
        return [f"{what}: the upstream parsed it {len(got)} times"]
    if refused or not got:
        return [f"{what}: answered 200 but the upstream never parsed it"] if e["status"] == 200 else []
    r = got[0]
    out = []
    if r.method.decode() != e["method"] or r.target.split(b"?")[0].decode("latin-1") != e["path"]:
        out.append(f"{what}: the upstream parsed {r.method!r} {r.target!r}")
    if e["status"] == 200 and (not r.complete or len(r.body) != e["bytes_in"]):
        out.append(f"{what}: proxy read {e['bytes_in']} body bytes, upstream {len(r.body)} (complete: {r.complete})")
    return out


# --- the rule, for answers ------------------------------------------------------------------------------
async def fetch_answer(port: int, j: int, a: Answer) -> tuple[Seen, Seen | None]:
    """The answer mutation's request, then (when the connection stays open) a plain GET after it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    client = h11.Connection(h11.CLIENT)
    first, second = Seen(), None
    try:
        writer.write(client.send(h11.Request(method=a.method, target=f"/a/{j}", headers=[("host", "proxy")])) or b"")
        writer.write(client.send(h11.EndOfMessage()) or b"")
        await _read_answers(reader, client, [a.method], first, ANSWER_QUIET)
        if first.open:
            second = Seen()
            nxt = h11.Request(method="GET", target=f"/a/{j}/next", headers=[("host", "proxy")])
            writer.write(client.send(nxt) or b"")
            writer.write(client.send(h11.EndOfMessage()) or b"")
            await _read_answers(reader, client, [b"GET"], second, ANSWER_QUIET)
    except h11.RemoteProtocolError as exc:
        (second or first).error = f"h11 refuses the proxy's answer: {exc}"
    except ConnectionError:
        pass
    finally:
        writer.close()
    return first, second


def answer_divergences(j: int, a: Answer, first: Seen, second: Seen | None, logged: dict[str, Any] | None) -> list[str]:
    """A 502 (JSON), or an answer aborted after its head and counted as an error (a streamed answer's
    502: the status is out), or exactly what h11 reads; then the next request gets its own answer."""
    meant = oracle.answer(a.method, a.data, a.eof)
    out = [first.error] if first.error else []
    if logged is None:
        out.append("the proxy logged no line for it")
    if first.answers and first.answers[0][0] == 502:
        body = first.answers[0][1]
        try:
            json.loads(body)
        except ValueError:
            out.append(f"502 without a JSON body: {body!r}")
    elif not first.answers:
        if not (first.cut and logged and logged.get("error")):
            out.append(f"no whole answer reached the client (cut: {first.cut}, logged: {logged}); h11 reads {meant}")
    elif meant is None:
        out.append(f"the client got {first.answers[0]}; h11 refuses the upstream's bytes")
    elif first.answers[0] != meant:
        out.append(f"the client got {first.answers[0]}; h11 reads {meant} in the upstream's bytes")
    if second is not None:
        want = (200, named(b"GET", b"/a/%d/next" % j, b""))
        if second.error or second.answers != [want]:
            out.append(f"the next request on the client connection got {second.answers} {second.error or ''}")
    return out


# --- the tests --------------------------------------------------------------------------------------------
def test_the_corpus_is_large_enough_and_its_names_unique():
    assert len(REQUESTS) >= 300 and len(ANSWERS) >= 100, (len(REQUESTS), len(ANSWERS))
    assert len({m.name for m in REQUESTS}) == len(REQUESTS)
    assert len({a.name for a in ANSWERS}) == len(ANSWERS)


def test_every_request_mutation_is_refused_or_parsed_the_same_upstream(rig: Rig):
    began = time.monotonic()
    seen = run_all(rig.proxy.port, [(m.data, m.methods) for m in REQUESTS])
    lines = settled(rig.proxy)
    divergences = {
        m.name: d for m, s in zip(REQUESTS, seen, strict=True) if (d := request_divergences(m, lines, rig.recorder, s))
    }
    stray = [e for e in rig.recorder.errors if not any(_blames(e, m.prefix.encode()) for m in REQUESTS)]
    report = "\n".join(f"{name}: {'; '.join(d)}" for name, d in sorted(divergences.items()))
    assert not divergences and not stray, f"{len(divergences)} of {len(REQUESTS)} mutations diverge:\n{report}\n{stray}"
    assert time.monotonic() - began < 60


def test_every_answer_mutation_is_a_502_or_read_the_same_by_the_client(rig: Rig):
    async def main() -> list[tuple[Seen, Seen | None]]:
        gate = asyncio.Semaphore(PARALLEL)

        async def one(j: int, a: Answer) -> tuple[Seen, Seen | None]:
            async with gate:
                return await fetch_answer(rig.proxy.port, j, a)

        return await asyncio.gather(*(one(j, a) for j, a in enumerate(ANSWERS)))

    results = asyncio.run(main())
    logged = {e["path"]: e for e in settled(rig.proxy)}
    divergences = {
        a.name: d
        for j, (a, (first, second)) in enumerate(zip(ANSWERS, results, strict=True))
        if (d := answer_divergences(j, a, first, second, logged.get(f"/a/{j}")))
    }
    report = "\n".join(f"{name}: {'; '.join(d)}" for name, d in sorted(divergences.items()))
    assert not divergences, f"{len(divergences)} of {len(ANSWERS)} answer mutations diverge:\n{report}"
    bad_gateways = sum(1 for first, _ in results if first.answers and first.answers[0][0] == 502)
    series = [line for line in rig.proxy.metrics().splitlines() if line.startswith("splitter_errors_total{")]
    counted = sum(float(line.rsplit(" ", 1)[1]) for line in series if 'kind="protocol"' in line)
    assert counted >= bad_gateways, (counted, bad_gateways)

