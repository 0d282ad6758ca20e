"""The batched access-log writer: whole lines, and no busy loop when stdout is a full non-blocking pipe."""

import fcntl
import os
import threading
import time

from splitter.logs import BatchedLogger


def test_a_full_non_blocking_stdout_waits_instead_of_spinning():
    r, w = os.pipe()
    fcntl.fcntl(w, fcntl.F_SETFL, fcntl.fcntl(w, fcntl.F_GETFL) | os.O_NONBLOCK)
    try:
        while True:  # fill the pipe
            os.write(w, b"x" * 65536)
    except BlockingIOError:
        pass
    log = BatchedLogger(w)
    cpu: list[float] = []

    def writer() -> None:
        t0 = time.thread_time()
        for i in range(50):
            log._pending.append(f'{{"event": "request", "n": {i}}}'.encode())
        log.flush()
        cpu.append(time.thread_time() - t0)

    t = threading.Thread(target=writer)
    t.start()
    time.sleep(1.0)  # the writer is blocked on the full pipe all this time
    assert t.is_alive()
    drained = b""
    while t.is_alive() or not drained.endswith(b"}\n"):
        drained += os.read(r, 1 << 20)
        time.sleep(0.01)
    t.join(5)
    os.close(r)
    os.close(w)
    assert cpu and cpu[0] < 0.2, f"spent {cpu[0]:.2f} s of CPU waiting for a full pipe"
    lines = [line for line in drained.split(b"\n") if b"{\"event\"" in line]
    assert len(lines) == 50
