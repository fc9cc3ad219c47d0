# cython: language_level=3
"""enx-media packet core: one module, per-topic files included in the order a packet moves through them
(see STYLE.md: a .pxd beside a .pyx in ext/ is ignored when built into enx_media._native)."""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int16_t, int32_t, int64_t
from libc.string cimport memcpy, memset, memcmp
from libc.stdlib cimport malloc, calloc, realloc, free
from cnet cimport *
from openssl cimport *

include "rtp.pxi"
include "rtcp.pxi"
include "payload.pxi"
include "map.pxi"
include "srtp.pxi"
include "stats.pxi"
include "nack.pxi"
include "entities.pxi"
include "twcc.pxi"
include "fanout.pxi"
include "worker.pxi"
include "benchtools.pxi"
