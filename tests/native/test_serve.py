"""The core's own media loop (NativeWorker.serve, what Worker.start_thread(loop) runs): media is forwarded
with no Python per wakeup, what Python must see arrives through one eventfd wakeup and take_queues(), and
a reader that does not keep up (a blocked asyncio loop, a client flooding STUN) costs counted drops of
control datagrams and events, never the media of anyone else."""
import asyncio
import os
import select
import threading
import time

import pytest

from enx_media._native import _core
from enx_media.sfu import Worker
from rtp_util import PLAIN, Peer, rtp, udp

QUEUE = 1024        # the core's CONTROL_QUEUE (worker.pxi)


def served(w: _core.NativeWorker):
    notify = os.eventfd(0, os.EFD_NONBLOCK)
    stop = os.eventfd(0, os.EFD_NONBLOCK)
    thread = threading.Thread(target=w.serve, args=(notify, stop, 20), daemon=True)
    thread.start()

    def end():
        os.eventfd_write(stop, 1)
        thread.join(5)
        assert not thread.is_alive()
        os.close(notify)
        os.close(stop)
    return notify, end


def test_serve_forwards_and_wakes_the_reader_once_for_what_it_queued():
    w = _core.NativeWorker("127.0.0.1", 0)
    src, dst, stranger = udp(1.0), udp(1.0), udp(1.0)
    pub = w.create_transport("none")
    w.bind_transport(pub, *src.getsockname())
    sub = w.create_transport("none")
    w.bind_transport(sub, *dst.getsockname())
    producer = w.create_producer(pub, 5, "opus")
    w.create_consumer(sub, producer, 6, 111, 48000, False)
    notify, end = served(w)
    try:
        for seq in range(20):
            src.sendto(rtp(seq, 960 * seq, 5, payload=b"opus"), w.local_address)
        got = [_core.parse_rtp(dst.recv(2048))["sequence_number"] for _ in range(20)]
        assert got == list(range(20))
        assert select.select([notify], [], [], 0.2)[0] == []        # nothing for Python: no wakeup
        for i in range(3):
            stranger.sendto(b"\x00\x01" + bytes([i]) * 30, w.local_address)   # STUN Python must judge
        assert select.select([notify], [], [], 2)[0] == [notify]
        time.sleep(0.05)
        control, events = w.take_queues()
        assert [d for d, _ in control] == [b"\x00\x01" + bytes([i]) * 30 for i in range(3)]
        assert all(a == stranger.getsockname() for _, a in control)
        with pytest.raises(RuntimeError):
            w.serve(notify, notify)                                 # one thread serves a worker
    finally:
        end()
    for s in (src, dst, stranger):
        s.close()


def test_a_reader_that_does_not_take_the_queues_costs_counted_drops_not_media():
    w = _core.NativeWorker("127.0.0.1", 0)
    src, dst, flooder = udp(1.0), udp(1.0), udp(1.0)
    pub = w.create_transport("none")
    w.bind_transport(pub, *src.getsockname())
    sub = w.create_transport("none")
    w.bind_transport(sub, *dst.getsockname())
    producer = w.create_producer(pub, 5, "opus")
    w.create_consumer(sub, producer, 6, 111, 48000, False)
    notify, end = served(w)
    try:
        for seq in range(QUEUE + 60):   # the queue holds QUEUE: the rest are dropped, counted
            flooder.sendto(b"\x00\x01" + bytes(30), w.local_address)
            if seq % 3 == 0:
                src.sendto(rtp(seq // 3, 960 * seq, 5, payload=b"opus"), w.local_address)
        got = [_core.parse_rtp(dst.recv(2048))["sequence_number"] for _ in range(100)]
        assert got == list(range(100))
        time.sleep(0.05)
        assert w.stats["drops"]["control_queue_full"] == 60
        os.eventfd_read(notify)
        control, _ = w.take_queues()
        assert len(control) == QUEUE
        flooder.sendto(b"\x00\x01" + bytes(30), w.local_address)    # taken: room again, a new wakeup
        assert select.select([notify], [], [], 2)[0] == [notify]
        assert len(w.take_queues()[0]) == 1
    finally:
        end()
    for s in (src, dst, flooder):
        s.close()


def test_start_thread_with_a_loop_hands_control_to_the_loop_and_stops_cleanly():
    async def scenario():
        seen = []
        w = Worker("127.0.0.1", 0, on_control=lambda d, a: seen.append((threading.get_ident(), d)))
        w.start_thread(asyncio.get_running_loop())
        s = udp(1.0)
        s.sendto(b"\x00\x01hello", w.address)
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.02)
        assert seen == [(threading.get_ident(), b"\x00\x01hello")]   # on the loop's thread
        w.close()
        assert w._thread is None
        s.close()
    asyncio.run(scenario())


def test_peer_media_through_a_served_worker():
    async def scenario():
        w = Worker("127.0.0.1", 0)
        src, dst = Peer(w, PLAIN), Peer(w, PLAIN, timeout=2)
        p = w.create_producer(src.transport, 5, "opus")
        w.create_consumer(dst.transport, p, 6, 111, clock_rate=48000)
        w.start_thread(asyncio.get_running_loop())
        src.send_rtp(rtp(7, 8, 5, payload=b"opus"))
        h = await asyncio.get_running_loop().run_in_executor(None, lambda: _core.parse_rtp(dst.sock.recv(2048)))
        assert (h["ssrc"], h["sequence_number"], h["payload"]) == (6, 7, b"opus")
        w.close()
        src.close()
        dst.close()
    asyncio.run(scenario())
