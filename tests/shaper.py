"""A bandwidth-limited link for tests and benchmarks, all on 127.0.0.1: this kernel has no netem qdisc, so
a userspace UDP relay stands between a client and the node, like a NAT on the client's access link: each
client address gets its own socket towards the node (a browser's two peer connections stay two 5-tuples).
What the node sends back goes through one token bucket (rate, burst) with a queue of limited bytes and tail
drop, as a bottleneck router would; what the client sends goes straight on. Random loss can be added in
either direction (RTP and RTCP only, so the handshakes still complete). The rate can change while it
runs. It runs on a thread of its own, so a busy asyncio loop in the test does not shape the link by
accident.

    with Shaper(node_addr, rate_bps=2_000_000) as link:
        client sends to link.address ...
        link.rate_bps = 500_000
"""
from __future__ import annotations

import collections
import random
import select
import socket
import threading
import time


class Shaper:
    def __init__(self, target: tuple[str, int], rate_bps: float | None = None, *, queue_bytes: int = 64_000,
                 burst_bytes: int = 15_000, lose_up: float = 0.0, lose_down: float = 0.0, seed: int = 1):
        self.target = target
        # random loss (seeded) of RTP/RTCP from the client (up) and towards it (down); STUN and DTLS pass
        self.lose_up, self.lose_down = lose_up, lose_down
        self.lost_up = self.lost_down = 0
        self._rng = random.Random(seed)
        self.rate_bps = rate_bps              # None: unlimited
        self.queue_bytes = queue_bytes
        self.burst_bytes = burst_bytes
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)   # the clients' side
        self.front.bind(("127.0.0.1", 0))
        self.front.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.front.setblocking(False)
        self.backs: dict[tuple[str, int], socket.socket] = {}           # client address -> its node-side socket
        self.clients: dict[socket.socket, tuple[str, int]] = {}
        self.queue: collections.deque[tuple[bytes, tuple[str, int]]] = collections.deque()
        self.queued = 0
        self.tokens = float(burst_bytes)
        self.forwarded = self.dropped = self.sent_bytes = 0
        self.delivered: list[tuple[float, int]] = []   # (time, bytes) of each datagram let through
        self.offered: list[tuple[float, int]] = []     # (time, bytes) of each datagram the node sent
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="shaper", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        return self.front.getsockname()

    def __enter__(self) -> "Shaper":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.front.close()
        for b in self.backs.values():
            b.close()

    def rate_between(self, t0: float, t1: float, offered: bool = False) -> float:
        """Bits per second let through to the client (offered: the node sent towards it) between two
        time.monotonic() values."""
        got = sum(n for t, n in list(self.offered if offered else self.delivered) if t0 <= t < t1)
        return got * 8 / (t1 - t0)

    def _back(self, client: tuple[str, int]) -> socket.socket:
        b = self.backs.get(client)
        if b is None:
            b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            b.bind(("127.0.0.1", 0))
            b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            b.setblocking(False)
            self.backs[client], self.clients[b] = b, client
        return b

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.is_set():
            readable, _, _ = select.select([self.front, *self.clients], [], [], 0.001)
            for s in readable:
                while True:
                    try:
                        data, addr = s.recvfrom(65536)
                    except BlockingIOError:
                        break
                    if s is self.front:
                        if self._lose(data, self.lose_up):
                            self.lost_up += 1
                        else:
                            self._back(addr).sendto(data, self.target)
                        continue
                    client = self.clients[s]
                    if self._lose(data, self.lose_down):
                        self.lost_down += 1
                        continue
                    self.offered.append((time.monotonic(), len(data)))
                    if self.rate_bps is None:
                        self._deliver(data, client)
                    elif self.queued + len(data) > self.queue_bytes:
                        self.dropped += 1             # tail drop: the queue is full
                    else:
                        self.queue.append((data, client))
                        self.queued += len(data)
            now = time.monotonic()
            if self.rate_bps is not None:
                self.tokens = min(self.burst_bytes, self.tokens + (now - last) * self.rate_bps / 8)
            last = now
            while self.queue and (self.rate_bps is None or self.tokens >= len(self.queue[0][0])):
                data, client = self.queue.popleft()
                self.queued -= len(data)
                if self.rate_bps is not None:
                    self.tokens -= len(data)
                self._deliver(data, client)

    def _lose(self, data: bytes, share: float) -> bool:
        return share > 0 and 128 <= data[0] <= 191 and self._rng.random() < share    # RTP/RTCP only (RFC 7983)

    def _deliver(self, data: bytes, client: tuple[str, int]) -> None:
        try:
            self.front.sendto(data, client)
        except OSError:
            self.dropped += 1
            return
        self.forwarded += 1
        self.sent_bytes += len(data)
        self.delivered.append((time.monotonic(), len(data)))
