# Benchmark helpers (bench/): a native packet sink, so the measuring side costs little and adds no
# Python call per datagram, and the kernel-only sendmmsg baseline the forwarding figures compare with.

cdef enum:
    GRO_BUF = 65536
    GRO_CMSG = 32


def sink_count(list fds, double max_seconds, double idle_stop, int sample_every=0, int poll_interval_us=0,
               bint gro=False):
    """Count datagrams per socket until idle_stop seconds pass without one (after the first) or
    max_seconds pass. Keeps the last datagram of every sample_every-th socket. With poll_interval_us the
    sink sleeps between polls instead of blocking in epoll_wait: on loopback a blocked receiver makes the
    sender pay for a task wakeup per datagram, which a remote subscriber would not cost it. That mode
    polls with poll(timeout 0), which leaves no waiter on the sockets: an epoll set would make every
    datagram the sender queues run the epoll callback (its lock and ready list) on the sender's CPU,
    another cost a remote subscriber does not put on it.

    gro=True enables UDP_GRO on the sockets: the kernel then queues a sender's UDP GSO message whole
    instead of cutting it into one skb per datagram on the sender's CPU (what a NIC with UDP segmentation
    offload spares the sender); each message still counts as the datagrams it carries (its length over
    the UDP_GRO segment size, the last one shorter) and the sample is its last datagram.

    Returns (counts, {index: last_datagram})."""
    cdef int n = len(fds), ep, i, k, r, idx, got
    cdef epoll_event ev
    cdef epoll_event evs[256]
    cdef uint64_t *counts = <uint64_t *>calloc(n, sizeof(uint64_t))
    cdef int *fdv = <int *>malloc(n * sizeof(int))
    cdef int bufsize = GRO_BUF if gro else SLOT, one = 1, seg, off
    cdef uint8_t *bufs = <uint8_t *>malloc(64 * bufsize)
    cdef uint8_t *ctl = <uint8_t *>calloc(64, GRO_CMSG)
    cdef cmsghdr *cm
    cdef uint8_t *last = NULL
    cdef int *last_len = <int *>calloc(n, sizeof(int))
    cdef mmsghdr msgs[64]
    cdef iovec iov[64]
    cdef int64_t start, deadline, last_rx = 0
    cdef pollfd *pfds = <pollfd *>calloc(n, sizeof(pollfd))
    cdef int *ready = <int *>calloc(n + 256, sizeof(int))
    if sample_every > 0:
        last = <uint8_t *>malloc(<size_t>n * SLOT)
    ep = epoll_create1(0)
    try:
        if counts == NULL or fdv == NULL or bufs == NULL or ctl == NULL or pfds == NULL or ready == NULL or ep < 0:
            raise MemoryError()
        for i in range(n):
            fdv[i] = fds[i]
            if gro and setsockopt(fdv[i], SOL_UDP, UDP_GRO, &one, sizeof(int)) != 0:
                raise OSError(errno, "UDP_GRO refused")
            pfds[i].fd = fdv[i]
            pfds[i].events = POLLIN
            if poll_interval_us > 0:
                continue
            ev.events = EPOLLIN
            ev.data.u32 = i
            if epoll_ctl(ep, EPOLL_CTL_ADD, fdv[i], &ev) != 0:
                raise OSError(errno, "epoll_ctl failed")
        for i in range(64):
            iov[i].iov_base = bufs + i * bufsize
            iov[i].iov_len = bufsize
            memset(&msgs[i], 0, sizeof(mmsghdr))
            msgs[i].msg_hdr.msg_iov = &iov[i]
            msgs[i].msg_hdr.msg_iovlen = 1
        with nogil:
            start = now_ns()
            deadline = start + <int64_t>(max_seconds * 1e9)
            while now_ns() < deadline:
                if last_rx and now_ns() - last_rx > <int64_t>(idle_stop * 1e9):
                    break
                if poll_interval_us > 0:
                    usleep(poll_interval_us)
                    poll(pfds, n, 0)
                    got = 0
                    for i in range(n):
                        if pfds[i].revents & POLLIN:
                            ready[got] = i
                            got += 1
                else:
                    got = epoll_wait(ep, evs, 256, 20)
                    for k in range(got):
                        ready[k] = evs[k].data.u32
                for k in range(got):
                    idx = ready[k]
                    while True:
                        if gro:
                            for i in range(64):
                                msgs[i].msg_hdr.msg_control = ctl + i * GRO_CMSG
                                msgs[i].msg_hdr.msg_controllen = GRO_CMSG
                        r = recvmmsg(fdv[idx], msgs, 64, MSG_DONTWAIT, NULL)
                        if r <= 0:
                            break
                        off = 0
                        seg = <int>msgs[r - 1].msg_len
                        if gro:
                            for i in range(r):
                                cm = <cmsghdr *>(ctl + i * GRO_CMSG)
                                if msgs[i].msg_hdr.msg_controllen >= CMSG_LEN(sizeof(int)) and \
                                        cm.cmsg_level == SOL_UDP and cm.cmsg_type == UDP_GRO:
                                    seg = (<int *>CMSG_DATA(cm))[0]
                                    counts[idx] += (msgs[i].msg_len + seg - 1) // seg
                                else:
                                    seg = <int>msgs[i].msg_len
                                    counts[idx] += 1
                            off = ((<int>msgs[r - 1].msg_len - 1) // seg) * seg
                        else:
                            counts[idx] += r
                        if last != NULL and idx % sample_every == 0:
                            memcpy(last + <size_t>idx * SLOT, bufs + (r - 1) * bufsize + off, msgs[r - 1].msg_len - off)
                            last_len[idx] = msgs[r - 1].msg_len - off
                        if r < 64:
                            break
                if got > 0:
                    last_rx = now_ns()
        samples = {}
        if last != NULL:
            for i in range(0, n, sample_every):
                if last_len[i]:
                    samples[i] = bytes(last[<size_t>i * SLOT:<size_t>i * SLOT + last_len[i]])
        return [counts[i] for i in range(n)], samples
    finally:
        if ep >= 0:
            close(ep)
        free(counts)
        free(fdv)
        free(bufs)
        free(ctl)
        free(last)
        free(last_len)
        free(pfds)
        free(ready)


def raw_sendmmsg_baseline(int fd, list dests, bytes payload, long count):
    """The kernel's cost alone: send count datagrams of payload round-robin to dests with sendmmsg,
    SEND_BATCH per call, nothing else (the yardstick for bench/forwarding.py)."""
    cdef int nd = len(dests), i, r, k, n
    cdef long sent = 0
    cdef sockaddr_in *addrs
    cdef mmsghdr *msgs
    cdef iovec iov
    if nd == 0:
        return 0
    addrs = <sockaddr_in *>malloc(nd * sizeof(sockaddr_in))
    msgs = <mmsghdr *>calloc(SEND_BATCH, sizeof(mmsghdr))
    try:
        for i, (h, p) in enumerate(dests):
            _sockaddr(h, p, &addrs[i])
        iov.iov_base = <void *><const uint8_t *>payload
        iov.iov_len = len(payload)
        with nogil:
            k = 0
            while sent < count:
                if count - sent > SEND_BATCH:
                    n = SEND_BATCH
                else:
                    n = <int>(count - sent)
                for i in range(n):
                    msgs[i].msg_hdr.msg_iov = &iov
                    msgs[i].msg_hdr.msg_iovlen = 1
                    msgs[i].msg_hdr.msg_name = &addrs[k]
                    msgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_in)
                    k += 1
                    if k == nd:
                        k = 0
                r = sendmmsg(fd, msgs, n, 0)
                if r <= 0:
                    break
                sent += r
        return sent
    finally:
        free(addrs)
        free(msgs)
