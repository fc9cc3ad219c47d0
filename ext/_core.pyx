# cython: language_level=3
"""enx-media packet core: one compiled module. Per-topic files are included in this order: the packet
formats and tables first (RTP, RTCP, payloads, containers, SRTP, drop reasons, NACK lists, the downlink
bandwidth estimator, entities, transport-cc, the events queued for Python), then the packet path in the order a packet moves through it (udp: receive and demux, stun: consent checks answered in the core,
ingest: the producer side, seq: a consumer's numbering, fanout: the copies per consumer, consumer: rewrite/protect/retransmit,
pacer: what a subscriber transport is sent held to its estimate, rtcp_io: feedback in and out, direct: the Python-fed producer and the tap that hands a producer's packets to Python), then the control API (worker) and bench helpers, and last the MCU's kernels (compositor: I420 scale and place;
mixer: PCM mix and mix-minus). Structs must be
defined before a struct that embeds them; functions may be used before their definition.
(A .pxd beside a .pyx in ext/ is ignored when built into enx_media._native: shared C declarations go in
ext/includes/*.pxd, see STYLE.md.)"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int16_t, int32_t, int64_t
from libc.string cimport memcpy, memmove, memset, memcmp, strcmp, strcpy, strerror
from libc.stdlib cimport malloc, calloc, realloc, free
from cnet cimport *
from openssl cimport *
from zlib cimport crc32
import os

cdef struct Core      # the worker's C state (worker.pxi), passed to every packet-path function
cdef struct Pacer     # a subscriber transport's pacer (pacer.pxi), allocated once it paces
cdef struct Tap       # a producer's packets kept for Python (direct.pxi), allocated once tapped
cdef struct IceCreds  # a connected transport's ICE credentials (stun.pxi), set once it is connected

include "rtp.pxi"
include "rtcp.pxi"
include "payload.pxi"
include "map.pxi"
include "srtp.pxi"
include "stats.pxi"
include "nack.pxi"
include "bwe.pxi"
include "entities.pxi"
include "twcc.pxi"
include "events.pxi"
include "udp.pxi"
include "stun.pxi"
include "ingest.pxi"
include "seq.pxi"
include "fanout.pxi"
include "consumer.pxi"
include "pacer.pxi"
include "rtcp_io.pxi"
include "direct.pxi"
include "worker.pxi"
include "benchtools.pxi"
include "compositor.pxi"
include "mixer.pxi"
