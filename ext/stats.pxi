# Named drop reasons: every packet the core refuses is counted under one of these.

cdef enum:
    DROP_TRUNCATED = 0
    DROP_BAD_VERSION
    DROP_BAD_PADDING
    DROP_BAD_EXTENSION
    DROP_BAD_LENGTH
    DROP_AUTH_FAIL
    DROP_REPLAY
    DROP_TOO_MANY_STREAMS
    DROP_CRYPTO
    DROP_NO_ROOM
    DROP_UNKNOWN_SOURCE
    DROP_UNKNOWN_SSRC
    DROP_SSRC_WRONG_TRANSPORT
    DROP_NOT_MEDIA
    DROP_NACK_NOT_HELD
    DROP_PLI_RATE_LIMITED
    DROP_CONTROL_QUEUE_FULL
    DROP_SEND_FAILED
    DROP_PAUSED
    DROP_LAYER
    DROP_LATE                  # a late packet whose output number is used or was given away
    DROP_NACK_TOO_SOON         # that seq was retransmitted to the consumer less than an RTT ago
    DROP_NACK_BUDGET           # the consumer's retransmission byte budget is spent
    DROP_PADDING_ONLY          # no payload (a sender's bandwidth probe): not worth a subscriber's bytes
    DROP_NACK_PADDING          # a NACK for one of our probe's padding packets: nothing to repair
    DROP_PACE_OVERFLOW         # the transport's pacer held PACE_QUEUE_MAX copies already
    DROP_PACE_EXPIRED          # a held copy outwaited the producer's history
    DROP_BAD_RTX               # an RTX packet with another payload type, or too short for its OSN
    DROP_OTHER
    DROP_COUNT

DROP_REASONS = ["truncated", "bad_version", "bad_padding", "bad_extension", "bad_length", "auth_fail",
                "replay", "too_many_streams", "crypto", "no_room", "unknown_source", "unknown_ssrc",
                "ssrc_wrong_transport", "not_media", "nack_not_held", "pli_rate_limited",
                "control_queue_full", "send_failed", "paused", "layer", "late", "nack_too_soon", "nack_budget",
                "padding_only", "nack_padding", "pace_overflow", "pace_expired", "bad_rtx", "other"]

_DROP_NAMES = {ST_TRUNCATED: "truncated", ST_BAD_VERSION: "bad version", ST_BAD_PADDING: "bad padding",
               ST_BAD_EXTENSION: "bad header extension", ST_BAD_LENGTH: "bad length",
               ST_AUTH_FAIL: "authentication failed", ST_REPLAY: "replayed packet",
               ST_TOO_MANY_STREAMS: "too many streams", ST_CRYPTO: "crypto error", ST_NO_ROOM: "no room"}


cdef inline int drop_reason(int status) noexcept nogil:
    if status == ST_TRUNCATED: return DROP_TRUNCATED
    if status == ST_BAD_VERSION: return DROP_BAD_VERSION
    if status == ST_BAD_PADDING: return DROP_BAD_PADDING
    if status == ST_BAD_EXTENSION: return DROP_BAD_EXTENSION
    if status == ST_BAD_LENGTH: return DROP_BAD_LENGTH
    if status == ST_AUTH_FAIL: return DROP_AUTH_FAIL
    if status == ST_REPLAY: return DROP_REPLAY
    if status == ST_TOO_MANY_STREAMS: return DROP_TOO_MANY_STREAMS
    if status == ST_CRYPTO: return DROP_CRYPTO
    if status == ST_NO_ROOM: return DROP_NO_ROOM
    return DROP_OTHER


cdef struct Counters:
    uint64_t packets_in
    uint64_t bytes_in
    uint64_t packets_out
    uint64_t bytes_out


cdef dict counters_dict(const Counters *c):
    return {"packets_in": c.packets_in, "bytes_in": c.bytes_in,
            "packets_out": c.packets_out, "bytes_out": c.bytes_out}


cdef dict drops_dict(const uint64_t *drops):
    return {DROP_REASONS[i]: drops[i] for i in range(DROP_COUNT) if drops[i]}
