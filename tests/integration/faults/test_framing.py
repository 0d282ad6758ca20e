"""The outbound framing is the proxy's own, and request ids cannot be predicted.

A recording upstream (raw socket, every byte kept per connection) parsed afterwards by h11, an
independent strict parser: what the backend reads is what the proxy meant to send, whatever the
client wrote in `Connection`. The differential suite in tests/integration/framing/ covers the whole class; these
are the cases of issue #32 spelled out."""

from __future__ import annotations

import json
import socket
import threading

import h11
import httpx
import pytest
from conftest import eventually

SMUGGLED = b"POST /api/auth/register HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nX-Forwarded-For: 6.6.6.6\r\n\r\nHELLO"


def next_cycle(parser: h11.Connection) -> None:
    """h11 as a server moves on only once it has answered: a stand-in answer, the real bytes go apart."""
    parser.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
    parser.send(h11.EndOfMessage())
    parser.start_next_cycle()


class Recorder:
    """Answers every request it can find in a connection with a 200 naming the request; keeps every byte."""

    def __init__(self, echo_id: bool = False) -> None:
        self.echo_id = echo_id
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.streams: list[bytearray] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            stream = bytearray()
            with self.lock:
                self.streams.append(stream)
            threading.Thread(target=self._serve, args=(conn, stream), daemon=True).start()

    def _serve(self, conn: socket.socket, stream: bytearray) -> None:
        parser = h11.Connection(h11.SERVER)
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return  # (fed to h11, the end would be a ConnectionClosed event for ever)
                stream += data
                parser.receive_data(data)
                try:
                    while True:
                        event = parser.next_event()
                        if event is h11.NEED_DATA or event is h11.PAUSED:
                            break
                        if isinstance(event, h11.ConnectionClosed):
                            return
                        if isinstance(event, h11.Request):
                            rid = dict(event.headers).get(b"x-request-id", b"")
                        if isinstance(event, h11.EndOfMessage):
                            body = b"ok"
                            extra = b"X-Request-ID: " + rid + b"\r\n" if self.echo_id else b""
                            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" + extra + b"\r\n" + body)
                            next_cycle(parser)
                except h11.RemoteProtocolError:
                    return

    def requests(self) -> list[tuple[bytes, bytes, dict[bytes, bytes], bytes]]:
        """(method, target, headers, body) of every request h11 reads in what arrived; a parse error fails."""
        out = []
        with self.lock:
            streams = [bytes(s) for s in self.streams]
        for stream in streams:
            parser = h11.Connection(h11.SERVER)
            parser.receive_data(stream)
            current: list = []
            while True:
                event = parser.next_event()
                if event is h11.NEED_DATA or event is h11.PAUSED:
                    break
                if isinstance(event, h11.Request):
                    current = [event.method, event.target, dict(event.headers), b""]
                elif isinstance(event, h11.Data):
                    current[3] += event.data
                elif isinstance(event, h11.EndOfMessage):
                    out.append(tuple(current))
                    next_cycle(parser)
        return out

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def recorder():
    r = Recorder()
    yield r
    r.close()


def config(url: str, extra: str = "") -> str:
    return f"""environment: production
backends:
  legacy: {{url: "{url}", read_timeout: 5{extra}}}
  new: {{url: "{url}", read_timeout: 5{extra}}}
user_id:
  - header: X-User-ID
anonymous: legacy
routes:
  - name: auth
    prefix: /api/auth
    percent: 0
unmatched: legacy
"""


def exchange(port: int, raw: bytes) -> bytes:
    """Send raw bytes on a new connection; everything the proxy answers until it goes quiet or closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(raw)
        s.settimeout(0.5)
        got = b""
        try:
            while chunk := s.recv(65536):
                got += chunk
        except TimeoutError:
            pass
        return got


@pytest.mark.parametrize(
    "connection",
    [
        [b"content-length"], [b"Content-Length"], [b"CONTENT-LENGTH"], [b"keep-alive, content-length"],
        [b"content-length , close"], [b"keep-alive", b"Content-length"], [b"host, content-length, x-forwarded-for"],
    ],
    ids=["lower", "canonical", "upper", "list-end", "list-start", "two-fields", "with-host"],
)
def test_connection_naming_content_length_smuggles_nothing(recorder, splitter, connection):
    """A body that is a whole request, its Content-Length named in Connection: the backend reads one request
    with that body (never a second one), and the next user's request on the pooled connection is theirs."""
    s = splitter(config(recorder.url))
    fields = b"".join(b"Connection: " + c + b"\r\n" for c in connection)
    raw = (
        b"POST /api/auth/logout HTTP/1.1\r\nHost: example.com\r\n" + fields
        + b"Content-Length: %d\r\n\r\n" % len(SMUGGLED) + SMUGGLED
    )
    answer = exchange(s.port, raw)
    assert answer.startswith(b"HTTP/1.1 200 ") or answer.startswith(b"HTTP/1.1 400 "), answer
    victim = httpx.get(s.url + "/api/auth/me", timeout=5)  # on the same pooled upstream connection
    assert victim.status_code == 200 and victim.text == "ok"
    seen = eventually(lambda: (r := recorder.requests()) and len(r) >= 2 and r)
    targets = [(m, t) for m, t, _, _ in seen]
    assert (b"POST", b"/api/auth/register") not in targets, seen
    if answer.startswith(b"HTTP/1.1 200 "):
        assert targets == [(b"POST", b"/api/auth/logout"), (b"GET", b"/api/auth/me")], seen
        method, target, headers, body = seen[0]
        assert body == SMUGGLED
        assert headers[b"content-length"] == str(len(SMUGGLED)).encode()
        assert headers[b"host"] == b"example.com"
    else:
        assert targets == [(b"GET", b"/api/auth/me")], seen


def test_connection_cannot_remove_host(recorder, splitter):
    s = splitter(config(recorder.url))
    answer = exchange(s.port, b"GET /api/auth/me HTTP/1.1\r\nHost: example.com\r\nConnection: host\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    [(_, _, headers, _)] = eventually(recorder.requests)
    assert headers[b"host"] == b"example.com"


@pytest.mark.parametrize(
    "te", [b"gzip, chunked", b"chunked, chunked", b"identity", b"gzip", b"chunked\r\nTransfer-Encoding: gzip"]
)
def test_a_transfer_coding_other_than_chunked_is_refused_and_nothing_is_forwarded(recorder, splitter, te):
    s = splitter(config(recorder.url))
    raw = b"POST /api/auth/x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: " + te + b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    answer = exchange(s.port, raw)
    assert answer.startswith(b"HTTP/1.1 400 ") or answer.startswith(b"HTTP/1.1 501 "), answer
    httpx.get(s.url + "/api/auth/after", timeout=5)
    assert [t for _, t, _, _ in eventually(recorder.requests)] == [b"/api/auth/after"]


def test_a_chunked_body_goes_upstream_chunked_with_the_same_bytes(recorder, splitter):
    s = splitter(config(recorder.url))
    raw = b"POST /api/auth/x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\nConnection: transfer-encoding\r\n\r\n"
    answer = exchange(s.port, raw + b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    [(_, _, headers, body)] = eventually(recorder.requests)
    assert body == b"hello world" and headers[b"transfer-encoding"] == b"chunked" and b"content-length" not in headers


def test_connection_in_the_answer_cannot_unframe_it(splitter):
    """An upstream answer whose Connection names Content-Length still reaches the client framed: the client
    reads one answer with the whole body, and the next answer on its connection is its own."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)

    def serve() -> None:
        conn, _ = sock.accept()
        with conn:
            parser = h11.Connection(h11.SERVER)
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                parser.receive_data(data)
                while (event := parser.next_event()) not in (h11.NEED_DATA, h11.PAUSED):
                    if isinstance(event, h11.EndOfMessage):
                        conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\nHELLO")
                        next_cycle(parser)

    threading.Thread(target=serve, daemon=True).start()
    s = splitter(config(f"http://127.0.0.1:{sock.getsockname()[1]}"))
    answer = exchange(s.port, b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n")
    client = h11.Connection(h11.CLIENT)
    client.receive_data(answer)
    bodies = []
    for _ in range(2):
        client.send(h11.Request(method="GET", target="/", headers=[("Host", "h")]))
        client.send(h11.EndOfMessage())
        body = b""
        while not isinstance(event := client.next_event(), h11.EndOfMessage):
            assert event is not h11.NEED_DATA, answer
            if isinstance(event, h11.Data):
                body += event.data
        bodies.append(body)
        client.start_next_cycle()
    assert bodies == [b"HELLO", b"HELLO"]
    sock.close()


# --- request ids -------------------------------------------------------------------------------------

def _untemper(y: int) -> int:
    """The inverse of MT19937's output tempering."""
    y ^= y >> 18
    y ^= (y << 15) & 0xEFC60000
    x = y
    for _ in range(5):
        x = y ^ ((x << 7) & 0x9D2C5680)
    y = x
    for _ in range(3):
        x = y ^ (x >> 11)
    return x & 0xFFFFFFFF


def predict(ids: list[int], n: int) -> list[int]:
    """The next n 128-bit values of a Mersenne Twister that produced `ids` with getrandbits(128): 156 of
    them are its whole state (624 words, each id four of them, least significant first)."""
    import random

    words = []
    for value in ids[-156:]:
        words += [(value >> (32 * k)) & 0xFFFFFFFF for k in range(4)]
    mt = random.Random()
    mt.setstate((3, tuple(_untemper(w) for w in words) + (624,), None))
    return [mt.getrandbits(128) for _ in range(n)]


def test_the_state_recovery_predicts_a_mersenne_twister():
    """The attack the next test runs works: 160 ids from random.getrandbits predict the next 4."""
    import random

    gen = random.Random(1234)
    seen = [gen.getrandbits(128) for _ in range(160)]
    assert predict(seen, 4) == [gen.getrandbits(128) for _ in range(4)]


def test_request_ids_do_not_predict_the_next_ones(recorder, splitter):
    s = splitter(config(recorder.url))
    ids = []
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as sock, sock.makefile("rb") as f:
        for _ in range(164):
            sock.sendall(b"GET /api/auth/me HTTP/1.1\r\nHost: h\r\n\r\n")
            head = b""
            while (line := f.readline()) not in (b"\r\n", b""):
                head += line
            ids.append(int(next(v for k, v in (h.split(b": ", 1) for h in head.split(b"\r\n")[1:] if h)
                                if k.lower() == b"x-request-id").strip(), 16))
            length = int(next(v for k, v in (h.split(b": ", 1) for h in head.split(b"\r\n")[1:] if h)
                              if k.lower() == b"content-length"))
            f.read(length)
    assert len(set(ids)) == 164
    assert predict(ids[:160], 4) != ids[160:]


def test_check_request_id_matches_on_the_proxys_own_id(splitter):
    """With check_request_id the upstream gets an id the proxy minted (and must echo it); the client's own id
    goes upstream as X-Client-Request-ID, comes back to the client, and is logged as client_request_id."""
    r = Recorder(echo_id=True)
    try:
        s = splitter(config(r.url, ", check_request_id: true"))
        resp = httpx.get(s.url + "/api/auth/me", headers={"X-Request-ID": "client-chosen-1"}, timeout=5)
        assert resp.status_code == 200 and resp.headers["x-request-id"] == "client-chosen-1"
        [(_, _, headers, _)] = eventually(r.requests)
        assert headers[b"x-client-request-id"] == b"client-chosen-1"
        minted = headers[b"x-request-id"]
        assert minted != b"client-chosen-1" and len(minted) == 32 and int(minted, 16) >= 0
        entry = s.wait_log(lambda e: e.get("event") == "request" and e.get("path") == "/api/auth/me")
        assert entry["request_id"] == minted.decode() and entry["client_request_id"] == "client-chosen-1"
        # a client cannot set X-Client-Request-ID itself
        httpx.get(s.url + "/api/auth/two", headers={"X-Client-Request-ID": "forged"}, timeout=5)
        two = eventually(lambda: next((h for _, t, h, _ in r.requests() if t == b"/api/auth/two"), None))
        assert b"x-client-request-id" not in two and json.dumps(entry)
    finally:
        r.close()


def test_without_check_request_id_the_clients_id_is_kept(recorder, splitter):
    s = splitter(config(recorder.url))
    resp = httpx.get(s.url + "/api/auth/me", headers={"X-Request-ID": "mine-42"}, timeout=5)
    assert resp.headers["x-request-id"] == "mine-42"
    [(_, _, headers, _)] = eventually(recorder.requests)
    assert headers[b"x-request-id"] == b"mine-42" and b"x-client-request-id" not in headers
