# Payload inspection: VP8 payload descriptor (RFC 7741 §4.2), H.264 NAL units (RFC 6184 §5.6-5.8).
# Opus (RFC 7587) is forwarded untouched: nothing to inspect.

cdef enum:
    CODEC_OTHER = 0
    CODEC_VP8 = 1
    CODEC_H264 = 2
    CODEC_OPUS = 3

cdef struct Vp8Desc:
    int x, n, s, pid          # first octet: extension, non-reference, start of partition, partition idx
    int picid                 # -1 when absent
    int picid_bits            # 7 or 15
    int picid_offset          # where it sits (a consumer rewrites it across layer switches: vp8_layout)
    int tl0picidx             # -1 when absent
    int tl0_offset
    int tid                   # -1 when absent
    int layer_sync
    int keyidx                # -1 when absent
    int header_len
    int keyframe
    int width, height         # a key frame's picture size (its first packet); 0 when not known


cdef inline void vp8_layout(const Vp8Desc *d, RtpLayout *l) noexcept nogil:
    """What a consumer needs of a parsed descriptor to rewrite picture ID and TL0PICIDX (consumer.pxi)."""
    l.vp8_picid = d.picid
    l.vp8_picid_bits = d.picid_bits
    l.vp8_picid_off = d.picid_offset
    l.vp8_tl0 = d.tl0picidx
    l.vp8_tl0_off = d.tl0_offset


cdef int vp8_parse(const uint8_t *p, int n, Vp8Desc *d) noexcept nogil:
    cdef int off = 1, i_bit, l_bit, t_bit, k_bit
    if n < 1:
        return ST_TRUNCATED
    d.x = (p[0] >> 7) & 1
    d.n = (p[0] >> 5) & 1
    d.s = (p[0] >> 4) & 1
    d.pid = p[0] & 0x07
    d.picid = -1
    d.picid_bits = 0
    d.picid_offset = -1
    d.tl0picidx = -1
    d.tl0_offset = -1
    d.tid = -1
    d.layer_sync = 0
    d.keyidx = -1
    d.keyframe = 0
    d.width = 0
    d.height = 0
    if d.x:
        if n < 2:
            return ST_TRUNCATED
        i_bit = (p[1] >> 7) & 1
        l_bit = (p[1] >> 6) & 1
        t_bit = (p[1] >> 5) & 1
        k_bit = (p[1] >> 4) & 1
        off = 2
        if i_bit:
            if n < off + 1:
                return ST_TRUNCATED
            d.picid_offset = off
            if p[off] & 0x80:          # M bit: 15-bit picture ID
                if n < off + 2:
                    return ST_TRUNCATED
                d.picid = ((p[off] & 0x7f) << 8) | p[off + 1]
                d.picid_bits = 15
                off += 2
            else:
                d.picid = p[off] & 0x7f
                d.picid_bits = 7
                off += 1
        if l_bit:
            if n < off + 1:
                return ST_TRUNCATED
            d.tl0_offset = off
            d.tl0picidx = p[off]
            off += 1
        if t_bit or k_bit:
            if n < off + 1:
                return ST_TRUNCATED
            if t_bit:
                d.tid = p[off] >> 6
                d.layer_sync = (p[off] >> 5) & 1
            if k_bit:
                d.keyidx = p[off] & 0x1f
            off += 1
    d.header_len = off
    # RFC 7741 §4.3: the P bit (inverse key frame flag) is in the first byte of partition 0's start
    if d.s and d.pid == 0 and n > off and (p[off] & 0x01) == 0:
        d.keyframe = 1
        # RFC 6386 §9.1: a key frame's 3-byte tag, start code 9d 01 2a, then 14-bit width and height
        # (little-endian, the top 2 bits are scaling): what a layer selector compares to a wanted size
        if n >= off + 10 and p[off + 3] == 0x9d and p[off + 4] == 0x01 and p[off + 5] == 0x2a:
            d.width = (p[off + 6] | (p[off + 7] << 8)) & 0x3fff
            d.height = (p[off + 8] | (p[off + 9] << 8)) & 0x3fff
    return ST_OK


cdef inline int _h264_key_type(int t) noexcept nogil:
    return t == 5 or t == 7      # IDR slice or SPS


cdef int h264_keyframe(const uint8_t *p, int n) noexcept nogil:
    """1 if the payload starts/contains a key frame, 0 if not, negative status if malformed."""
    cdef int t, off, sz
    if n < 1:
        return ST_TRUNCATED
    t = p[0] & 0x1f
    if 1 <= t <= 23:
        return _h264_key_type(t)
    if t == 24:                  # STAP-A: 16-bit size, NAL unit, ...
        off = 1
        while off + 2 <= n:
            sz = rd16(p + off)
            off += 2
            if sz == 0 or off + sz > n:
                return ST_TRUNCATED
            if _h264_key_type(p[off] & 0x1f):
                return 1
            off += sz
        return 0
    if t == 28:                  # FU-A: key only on the start fragment
        if n < 2:
            return ST_TRUNCATED
        return 1 if (p[1] & 0x80) and _h264_key_type(p[1] & 0x1f) else 0
    return 0


# H.264 picture size from the sequence parameter set (ITU-T H.264 §7.3.2.1.1): what a simulcast layer
# selector compares to a wanted size (VP8 says it in its key frame header; H.264 only here). Written here:
# a few fields of one NAL unit, read without an allocation on the packet path; FFmpeg's parser is not
# reachable from nogil C without a codec context per stream.

cdef struct BitReader:
    const uint8_t *p
    int n                   # bytes
    int byte, bit           # position
    int zeros               # 0x00 bytes just read (emulation prevention: 00 00 03 drops the 03)
    int bad                 # read past the end, or a value out of range


cdef inline int br_bit(BitReader *r) noexcept nogil:
    cdef int v
    if r.bit == 0:
        if r.byte >= r.n:
            r.bad = 1
            return 0
        if r.zeros >= 2 and r.p[r.byte] == 3:
            r.byte += 1
            r.zeros = 0
            if r.byte >= r.n:
                r.bad = 1
                return 0
        r.zeros = r.zeros + 1 if r.p[r.byte] == 0 else 0
    v = (r.p[r.byte] >> (7 - r.bit)) & 1
    r.bit += 1
    if r.bit == 8:
        r.bit = 0
        r.byte += 1
    return v


cdef inline uint32_t br_bits(BitReader *r, int k) noexcept nogil:
    cdef uint32_t v = 0
    cdef int i
    for i in range(k):
        v = (v << 1) | <uint32_t>br_bit(r)
    return v


cdef inline uint32_t br_ue(BitReader *r) noexcept nogil:
    """Exp-Golomb ue(v); more than 31 leading zeros is malformed."""
    cdef int lz = 0
    while not br_bit(r):
        lz += 1
        if lz > 31 or r.bad:
            r.bad = 1
            return 0
    return ((<uint32_t>1 << lz) - 1) + br_bits(r, lz)


cdef inline int32_t br_se(BitReader *r) noexcept nogil:
    cdef uint32_t k = br_ue(r)
    return <int32_t>((k + 1) // 2) if k & 1 else -<int32_t>(k // 2)


cdef int h264_sps_size(const uint8_t *p, int n, int *width, int *height) noexcept nogil:
    """Width and height (cropped) from an SPS NAL unit (p[0] is its NAL header, type 7). ST_OK, or a
    negative status for a malformed one (nothing written then)."""
    cdef BitReader r
    cdef uint32_t profile, chroma = 1, i, j, count, size, w, h, frame_mbs_only
    cdef uint32_t cl = 0, cr = 0, ct = 0, cb = 0, cux, cuy
    cdef int32_t last, nxt, delta
    if n < 4 or (p[0] & 0x1f) != 7:
        return ST_TRUNCATED
    memset(&r, 0, sizeof(BitReader))
    r.p, r.n, r.byte = p, n, 1
    profile = br_bits(&r, 8)
    br_bits(&r, 16)                                  # constraint flags, level_idc
    br_ue(&r)                                        # seq_parameter_set_id
    if profile in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
        chroma = br_ue(&r)
        if chroma > 3:
            return ST_BAD_LENGTH
        if chroma == 3:
            br_bit(&r)                               # separate_colour_plane_flag
        br_ue(&r)                                    # bit_depth_luma_minus8
        br_ue(&r)                                    # bit_depth_chroma_minus8
        br_bit(&r)                                   # qpprime_y_zero_transform_bypass_flag
        if br_bit(&r):                               # seq_scaling_matrix_present_flag
            count = 12 if chroma == 3 else 8
            for i in range(count):
                if br_bit(&r):                       # a scaling list: only skipped
                    size = 16 if i < 6 else 64
                    last = nxt = 8
                    for j in range(size):
                        if nxt != 0:
                            delta = br_se(&r)
                            nxt = (last + delta + 256) % 256
                        if nxt != 0:
                            last = nxt
                        if r.bad:
                            return ST_TRUNCATED
    br_ue(&r)                                        # log2_max_frame_num_minus4
    i = br_ue(&r)                                    # pic_order_cnt_type
    if i == 0:
        br_ue(&r)
    elif i == 1:
        br_bit(&r)
        br_se(&r)
        br_se(&r)
        count = br_ue(&r)
        if count > 255:
            return ST_BAD_LENGTH
        for j in range(count):
            br_se(&r)
    elif i > 2:
        return ST_BAD_LENGTH
    br_ue(&r)                                        # max_num_ref_frames
    br_bit(&r)                                       # gaps_in_frame_num_value_allowed_flag
    w = br_ue(&r) + 1                                # in macroblocks
    h = br_ue(&r) + 1                                # in map units
    frame_mbs_only = br_bit(&r)
    if not frame_mbs_only:
        br_bit(&r)                                   # mb_adaptive_frame_field_flag
    br_bit(&r)                                       # direct_8x8_inference_flag
    if br_bit(&r):                                   # frame_cropping_flag
        cl, cr, ct, cb = br_ue(&r), br_ue(&r), br_ue(&r), br_ue(&r)
    if r.bad or w > 1024 or h > 1024:
        return ST_TRUNCATED if r.bad else ST_BAD_LENGTH
    cux = 1 if chroma == 0 or chroma == 3 else 2
    cuy = (1 if chroma == 0 or chroma == 3 else (2 if chroma == 1 else 1)) * (2 - frame_mbs_only)
    w = w * 16
    h = h * 16 * (2 - frame_mbs_only)
    if cux * (cl + cr) >= w or cuy * (ct + cb) >= h:
        return ST_BAD_LENGTH
    width[0] = <int>(w - cux * (cl + cr))
    height[0] = <int>(h - cuy * (ct + cb))
    return ST_OK


cdef int h264_payload_size(const uint8_t *p, int n, int *width, int *height) noexcept nogil:
    """The picture size an RTP payload's SPS tells (a single SPS NAL unit, or one inside a STAP-A, as
    senders put it ahead of an IDR): ST_OK and the size, or a negative status (no SPS, or malformed)."""
    cdef int off, sz
    if n < 1:
        return ST_TRUNCATED
    if (p[0] & 0x1f) == 7:
        return h264_sps_size(p, n, width, height)
    if (p[0] & 0x1f) == 24:
        off = 1
        while off + 2 <= n:
            sz = rd16(p + off)
            off += 2
            if sz == 0 or off + sz > n:
                return ST_TRUNCATED
            if (p[off] & 0x1f) == 7:
                return h264_sps_size(p + off, sz, width, height)
            off += sz
    return ST_TRUNCATED


def h264_size(bytes payload):
    """(width, height) from an H.264 RTP payload carrying an SPS (alone or in a STAP-A), as the core reads
    it; ValueError if it carries none or a malformed one."""
    cdef int w = 0, h = 0
    if h264_payload_size(<const uint8_t *>payload, len(payload), &w, &h) != ST_OK:
        raise ValueError("no well-formed H.264 SPS in this payload")
    return w, h


cdef int payload_keyframe(int codec, const uint8_t *p, int n) noexcept nogil:
    cdef Vp8Desc d
    cdef int st
    if codec == CODEC_VP8:
        st = vp8_parse(p, n, &d)
        return st if st < 0 else d.keyframe
    if codec == CODEC_H264:
        return h264_keyframe(p, n)
    return 0


def parse_vp8_descriptor(bytes payload):
    cdef Vp8Desc d
    if vp8_parse(<const uint8_t *>payload, len(payload), &d) != ST_OK:
        raise ValueError("VP8 payload descriptor is truncated")
    return {"x": d.x, "n": d.n, "s": d.s, "pid": d.pid,
            "picture_id": None if d.picid < 0 else d.picid, "picture_id_bits": d.picid_bits,
            "tl0picidx": None if d.tl0picidx < 0 else d.tl0picidx,
            "tid": None if d.tid < 0 else d.tid, "layer_sync": d.layer_sync,
            "keyidx": None if d.keyidx < 0 else d.keyidx, "header_len": d.header_len,
            "keyframe": bool(d.keyframe), "width": d.width, "height": d.height}


def is_keyframe(str codec, bytes payload):
    """Key frame test for 'vp8', 'h264'; 'opus' is always False. Raises ValueError if malformed."""
    cdef int c = {"vp8": CODEC_VP8, "h264": CODEC_H264, "opus": CODEC_OPUS}.get(codec.lower(), CODEC_OTHER)
    cdef int r = payload_keyframe(c, <const uint8_t *>payload, len(payload))
    if r < 0:
        raise ValueError(codec + " payload is truncated")
    return bool(r)
