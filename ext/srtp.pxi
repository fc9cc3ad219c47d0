# SRTP/SRTCP (RFC 3711) with AES-CM + HMAC-SHA1-80 and AEAD AES-GCM (RFC 7714), on OpenSSL EVP.
# The cipher contexts are keyed once per context; a packet only sets its IV (no allocation).

cdef enum:
    SRTP_NONE = 0
    SRTP_AES128_CM_SHA1_80 = 1
    SRTP_AEAD_AES_128_GCM = 2
    SRTP_AEAD_AES_256_GCM = 3
    SRTP_MAX_STREAMS = 4096    # per context (memory bound; each stream is allocated on its first packet)
    SRTP_MAX_TRAILER = 20      # room a caller leaves after a packet: tag (16) + SRTCP index (4)

cdef enum:
    ST_AUTH_FAIL = -10
    ST_REPLAY = -11
    ST_TOO_MANY_STREAMS = -12
    ST_CRYPTO = -13
    ST_NO_ROOM = -14

PROFILES = {"AES_CM_128_HMAC_SHA1_80": SRTP_AES128_CM_SHA1_80, "AEAD_AES_128_GCM": SRTP_AEAD_AES_128_GCM,
            "AEAD_AES_256_GCM": SRTP_AEAD_AES_256_GCM, "none": SRTP_NONE}
# master key / salt lengths per profile (RFC 3711 §8.2, RFC 7714 §12)
PROFILE_KEY_SALT = {"AES_CM_128_HMAC_SHA1_80": (16, 14), "AEAD_AES_128_GCM": (16, 12),
                    "AEAD_AES_256_GCM": (32, 12)}

cdef enum:
    # RTP replay window (RFC 3711 §3.3.2 asks for >= 64): 1024 like libwebrtc's receivers, so that a
    # NACKed retransmission of a busy video stream (a key frame is ~100 packets) is not "too old"
    REPLAY_WINDOW = 1024
    REPLAY_WORDS = REPLAY_WINDOW // 64

cdef struct SrtpStream:
    uint32_t ssrc
    int have_seq
    uint32_t roc
    uint16_t s_l              # highest sequence number seen (RFC 3711 §3.3.1)
    uint64_t replay[REPLAY_WORDS]   # bit (index % REPLAY_WINDOW): that index authenticated (§3.3.2)
    int have_rtcp
    uint32_t rtcp_index       # sender: last used; receiver: highest seen (separate contexts)
    uint64_t rtcp_replay

cdef struct SrtpCtx:
    int profile
    int key_len
    int tag_len
    uint8_t rtp_salt[14]
    uint8_t rtcp_salt[14]
    EVP_CIPHER_CTX *rtp_enc
    EVP_CIPHER_CTX *rtp_dec
    EVP_CIPHER_CTX *rtcp_enc
    EVP_CIPHER_CTX *rtcp_dec
    HMAC_CTX *rtp_hmac
    HMAC_CTX *rtcp_hmac
    int nstreams
    U64Map smap               # SSRC -> SrtpStream* (each malloc'ed once, freed by srtp_stream_del)
    uint64_t auth_fail
    uint64_t replayed


cdef int _kdf(const uint8_t *mkey, int klen, const uint8_t *msalt, int slen, int label,
              uint8_t *out, int outlen) noexcept nogil:
    """RFC 3711 §4.3.1/§4.3.3 AES-CM PRF, key derivation rate 0: IV = (salt XOR label<<48) * 2^16.
    RFC 7714 §11: a 96-bit salt is used zero-padded to 112 bits."""
    cdef uint8_t iv[16]
    cdef uint8_t zeros[64]
    cdef int outl = 0, ok
    cdef EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new()
    if c == NULL:
        return ST_CRYPTO
    memset(iv, 0, 16)
    memset(zeros, 0, 64)
    memcpy(iv, msalt, slen)
    iv[7] ^= label
    ok = EVP_EncryptInit_ex(c, EVP_aes_256_ctr() if klen == 32 else EVP_aes_128_ctr(), NULL, mkey, iv)
    ok = ok and EVP_EncryptUpdate(c, out, &outl, zeros, outlen)
    EVP_CIPHER_CTX_free(c)
    return ST_OK if ok else ST_CRYPTO


cdef int srtp_ctx_init(SrtpCtx *c, int profile, const uint8_t *mkey, const uint8_t *msalt) noexcept nogil:
    cdef uint8_t k[32]
    cdef uint8_t auth[20]
    cdef const EVP_CIPHER *cipher
    cdef int slen, i
    memset(c, 0, sizeof(SrtpCtx))
    c.profile = profile
    if map_init(&c.smap, 16) != 0:
        return ST_CRYPTO
    if profile == SRTP_NONE:
        return ST_OK
    if profile == SRTP_AES128_CM_SHA1_80:
        c.key_len = 16
        slen = 14
        c.tag_len = 10
        cipher = EVP_aes_128_ctr()
    elif profile == SRTP_AEAD_AES_128_GCM:
        c.key_len = 16
        slen = 12
        c.tag_len = 16
        cipher = EVP_aes_128_gcm()
    else:
        c.key_len = 32
        slen = 12
        c.tag_len = 16
        cipher = EVP_aes_256_gcm()
    c.rtp_enc = EVP_CIPHER_CTX_new()
    c.rtp_dec = EVP_CIPHER_CTX_new()
    c.rtcp_enc = EVP_CIPHER_CTX_new()
    c.rtcp_dec = EVP_CIPHER_CTX_new()
    if not (c.rtp_enc and c.rtp_dec and c.rtcp_enc and c.rtcp_dec):
        return ST_CRYPTO
    # labels: 0 RTP key, 1 RTP auth, 2 RTP salt, 3 RTCP key, 4 RTCP auth, 5 RTCP salt (§4.3.2)
    for i in range(2):
        if _kdf(mkey, c.key_len, msalt, slen, 3 * i, k, c.key_len) != ST_OK:
            return ST_CRYPTO
        if _kdf(mkey, c.key_len, msalt, slen, 3 * i + 2, <uint8_t *>c.rtcp_salt if i else <uint8_t *>c.rtp_salt, slen) != ST_OK:
            return ST_CRYPTO
        if not EVP_EncryptInit_ex(c.rtcp_enc if i else c.rtp_enc, cipher, NULL, k, NULL):
            return ST_CRYPTO
        if not EVP_DecryptInit_ex(c.rtcp_dec if i else c.rtp_dec, cipher, NULL, k, NULL):
            return ST_CRYPTO
        if profile == SRTP_AES128_CM_SHA1_80:
            if _kdf(mkey, c.key_len, msalt, slen, 3 * i + 1, auth, 20) != ST_OK:
                return ST_CRYPTO
            if i:
                c.rtcp_hmac = HMAC_CTX_new()
                if not c.rtcp_hmac or not HMAC_Init_ex(c.rtcp_hmac, auth, 20, EVP_sha1(), NULL):
                    return ST_CRYPTO
            else:
                c.rtp_hmac = HMAC_CTX_new()
                if not c.rtp_hmac or not HMAC_Init_ex(c.rtp_hmac, auth, 20, EVP_sha1(), NULL):
                    return ST_CRYPTO
    memset(k, 0, 32)
    memset(auth, 0, 20)
    return ST_OK


cdef void srtp_ctx_free(SrtpCtx *c) noexcept nogil:
    cdef size_t i
    if c.smap.vals != NULL:
        for i in range(c.smap.cap):
            free(c.smap.vals[i])
    map_free(&c.smap)
    if c.rtp_enc: EVP_CIPHER_CTX_free(c.rtp_enc)
    if c.rtp_dec: EVP_CIPHER_CTX_free(c.rtp_dec)
    if c.rtcp_enc: EVP_CIPHER_CTX_free(c.rtcp_enc)
    if c.rtcp_dec: EVP_CIPHER_CTX_free(c.rtcp_dec)
    if c.rtp_hmac: HMAC_CTX_free(c.rtp_hmac)
    if c.rtcp_hmac: HMAC_CTX_free(c.rtcp_hmac)
    memset(c, 0, sizeof(SrtpCtx))


cdef inline SrtpStream *_stream_find(SrtpCtx *c, uint32_t ssrc) noexcept nogil:
    return <SrtpStream *>map_get(&c.smap, ssrc)


cdef SrtpStream *_stream_add(SrtpCtx *c, uint32_t ssrc) noexcept nogil:
    """A new stream (once per SSRC, not per packet); NULL when the context is full or memory is out."""
    cdef SrtpStream *s
    if c.nstreams >= SRTP_MAX_STREAMS:
        return NULL
    s = <SrtpStream *>calloc(1, sizeof(SrtpStream))
    if s == NULL:
        return NULL
    s.ssrc = ssrc
    if map_put(&c.smap, ssrc, s) != 0:
        free(s)
        return NULL
    c.nstreams += 1
    return s


cdef SrtpStream *_stream(SrtpCtx *c, uint32_t ssrc) noexcept nogil:
    """The sender's stream, created on first use (only for what we protect ourselves)."""
    cdef SrtpStream *s = _stream_find(c, ssrc)
    if s == NULL:
        s = _stream_add(c, ssrc)
    return s


cdef void srtp_stream_del(SrtpCtx *c, uint32_t ssrc) noexcept nogil:
    """Forget a stream (its consumer or producer closed). The SSRC must not be protected again under
    the same key (the RTP index would restart: nonce reuse); the worker refuses such reuse."""
    cdef SrtpStream *s
    if c == NULL or c.smap.vals == NULL:
        return
    s = _stream_find(c, ssrc)
    if s != NULL:
        map_del(&c.smap, ssrc)
        free(s)
        c.nstreams -= 1


cdef inline uint64_t _estimate_index(SrtpStream *s, uint16_t seq) noexcept nogil:
    """RFC 3711 §3.3.1 / Appendix A: guess the ROC of a sequence number relative to s_l."""
    cdef int64_t v = s.roc
    if not s.have_seq:
        return seq
    if s.s_l < 32768:
        if <int>seq - <int>s.s_l > 32768:
            v -= 1
    else:
        if <int>s.s_l - 32768 > <int>seq:
            v += 1
    if v < 0:
        v = 0
    return (<uint64_t>(<uint32_t>v) << 16) | seq


cdef inline void _replay_mark(uint64_t *w, uint64_t index, int on) noexcept nogil:
    cdef uint64_t bit = (<uint64_t>1) << (index & 63)
    cdef int k = <int>((index >> 6) & (REPLAY_WORDS - 1))
    if on:
        w[k] |= bit
    else:
        w[k] &= ~bit


cdef inline void _advance(SrtpStream *s, uint64_t index) noexcept nogil:
    cdef uint64_t highest = (<uint64_t>s.roc << 16) | s.s_l
    cdef uint64_t d, i
    if not s.have_seq:
        s.have_seq = 1
        memset(s.replay, 0, sizeof(s.replay))
    elif index > highest:
        d = index - highest
        if d >= REPLAY_WINDOW:
            memset(s.replay, 0, sizeof(s.replay))
        else:
            for i in range(1, d):       # the indexes skipped leave the window's oldest positions
                _replay_mark(s.replay, highest + i, 0)
    else:
        _replay_mark(s.replay, index, 1)
        return
    _replay_mark(s.replay, index, 1)
    s.roc = <uint32_t>(index >> 16)
    s.s_l = index & 0xffff


cdef inline int _rtp_replayed(const uint64_t *w, uint64_t highest, uint64_t index) noexcept nogil:
    if index > highest:
        return 0
    if highest - index >= REPLAY_WINDOW:
        return 1                   # too old to tell: treated as a replay (§3.3.2)
    return (w[(index >> 6) & (REPLAY_WORDS - 1)] >> (index & 63)) & 1


cdef inline int _replayed(uint64_t mask, uint64_t highest, uint64_t index) noexcept nogil:
    if index > highest:
        return 0
    if highest - index >= 64:
        return 1                   # too old to tell: treated as a replay (§3.3.2)
    return (mask >> (highest - index)) & 1


cdef inline void _cm_iv(uint8_t *iv, const uint8_t *salt, uint32_t ssrc, uint64_t index) noexcept nogil:
    # RFC 3711 §4.1.1: IV = (salt * 2^16) XOR (SSRC * 2^64) XOR (i * 2^16)
    cdef int i
    memcpy(iv, salt, 14)
    iv[14] = 0
    iv[15] = 0
    for i in range(4):
        iv[4 + i] ^= (ssrc >> (24 - 8 * i)) & 0xff
    for i in range(6):
        iv[8 + i] ^= (index >> (40 - 8 * i)) & 0xff


cdef inline void _gcm_iv(uint8_t *iv, const uint8_t *salt, uint32_t ssrc, uint32_t hi, uint16_t lo,
                         int rtcp) noexcept nogil:
    # RFC 7714 §8.1 (RTP: 00 00 | SSRC | ROC | SEQ) and §9.1 (RTCP: 00 00 | SSRC | 00 00 | index)
    cdef int i
    iv[0] = 0
    iv[1] = 0
    wr32(iv + 2, ssrc)
    if rtcp:
        wr16(iv + 6, 0)
        wr32(iv + 8, hi)
    else:
        wr32(iv + 6, hi)
        wr16(iv + 10, lo)
    for i in range(12):
        iv[i] ^= salt[i]


cdef int _ctr(EVP_CIPHER_CTX *x, const uint8_t *iv, uint8_t *data, int n) noexcept nogil:
    cdef int outl
    if not EVP_EncryptInit_ex(x, NULL, NULL, NULL, iv):
        return ST_CRYPTO
    if n > 0 and not EVP_EncryptUpdate(x, data, &outl, data, n):
        return ST_CRYPTO
    return ST_OK


cdef int _gcm_seal(EVP_CIPHER_CTX *x, const uint8_t *iv, const uint8_t *aad, int aadlen,
                   const uint8_t *aad2, int aad2len, uint8_t *data, int n, uint8_t *tag) noexcept nogil:
    cdef int outl
    if not EVP_EncryptInit_ex(x, NULL, NULL, NULL, iv):
        return ST_CRYPTO
    if not EVP_EncryptUpdate(x, NULL, &outl, aad, aadlen):
        return ST_CRYPTO
    if aad2len and not EVP_EncryptUpdate(x, NULL, &outl, aad2, aad2len):
        return ST_CRYPTO
    if n > 0 and not EVP_EncryptUpdate(x, data, &outl, data, n):
        return ST_CRYPTO
    if not EVP_EncryptFinal_ex(x, data + n, &outl):
        return ST_CRYPTO
    if not EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_GCM_GET_TAG, 16, tag):
        return ST_CRYPTO
    return ST_OK


cdef int _gcm_open(EVP_CIPHER_CTX *x, const uint8_t *iv, const uint8_t *aad, int aadlen,
                   const uint8_t *aad2, int aad2len, uint8_t *data, int n, const uint8_t *tag) noexcept nogil:
    cdef int outl
    if not EVP_DecryptInit_ex(x, NULL, NULL, NULL, iv):
        return ST_CRYPTO
    if not EVP_DecryptUpdate(x, NULL, &outl, aad, aadlen):
        return ST_CRYPTO
    if aad2len and not EVP_DecryptUpdate(x, NULL, &outl, aad2, aad2len):
        return ST_CRYPTO
    if n > 0 and not EVP_DecryptUpdate(x, data, &outl, data, n):
        return ST_CRYPTO
    if not EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_GCM_SET_TAG, 16, <void *>tag):
        return ST_CRYPTO
    if EVP_DecryptFinal_ex(x, data + n, &outl) <= 0:
        return ST_AUTH_FAIL
    return ST_OK


cdef int _hmac80(HMAC_CTX *h, const uint8_t *data, int n, const uint8_t *tail, int tail_len,
                 uint8_t *out) noexcept nogil:
    # RFC 3711 §4.2: HMAC-SHA1 truncated to 80 bits; the key stays set in the context
    cdef uint8_t md[20]
    cdef unsigned int mdlen
    if not HMAC_Init_ex(h, NULL, 0, NULL, NULL):
        return ST_CRYPTO
    HMAC_Update(h, data, n)
    if tail_len:
        HMAC_Update(h, tail, tail_len)
    if not HMAC_Final(h, md, &mdlen):
        return ST_CRYPTO
    memcpy(out, md, 10)
    return ST_OK


cdef int srtp_protect(SrtpCtx *c, uint8_t *buf, int length, int cap) noexcept nogil:
    """Encrypt and authenticate an RTP packet in place; returns the new length or a status."""
    cdef RtpHeader h
    cdef SrtpStream *s = NULL
    cdef int st
    if c.profile == SRTP_NONE:
        return length
    st = rtp_parse(buf, length, &h)
    if st != ST_OK:
        return st
    return srtp_protect_written(c, &s, buf, length, cap, h.header_len, h.ssrc, h.seq)


cdef int srtp_protect_written(SrtpCtx *c, SrtpStream **stream, uint8_t *buf, int length, int cap,
                              int header_len, uint32_t ssrc, uint16_t seq) noexcept nogil:
    """srtp_protect of a packet the caller has just written, so its header length, SSRC and seq are known
    (no parse), with the caller keeping the SSRC's stream in *stream (looked up on the first packet only:
    a consumer's copies skip the per-context map)."""
    cdef SrtpStream *s = stream[0]
    cdef uint64_t index
    cdef uint8_t iv[16]
    cdef uint8_t roc[4]
    cdef int st
    if c.profile == SRTP_NONE:
        return length
    if length + c.tag_len > cap:
        return ST_NO_ROOM
    if s == NULL:
        s = _stream(c, ssrc)
        if s == NULL:
            return ST_TOO_MANY_STREAMS
        stream[0] = s
    index = _estimate_index(s, seq)
    _advance(s, index)
    if c.profile == SRTP_AES128_CM_SHA1_80:
        _cm_iv(iv, c.rtp_salt, ssrc, index)
        st = _ctr(c.rtp_enc, iv, buf + header_len, length - header_len)
        if st != ST_OK:
            return st
        wr32(roc, <uint32_t>(index >> 16))
        st = _hmac80(c.rtp_hmac, buf, length, roc, 4, buf + length)
    else:
        _gcm_iv(iv, c.rtp_salt, ssrc, <uint32_t>(index >> 16), seq, 0)
        st = _gcm_seal(c.rtp_enc, iv, buf, header_len, NULL, 0, buf + header_len,
                       length - header_len, buf + length)
    return length + c.tag_len if st == ST_OK else st


cdef int srtp_unprotect(SrtpCtx *c, uint8_t *buf, int length) noexcept nogil:
    """Check and decrypt an SRTP packet in place; returns the plain length or a status."""
    cdef RtpHeader h
    cdef SrtpStream *s
    cdef uint64_t index
    cdef uint8_t iv[16]
    cdef uint8_t roc[4]
    cdef uint8_t tag[10]
    cdef int st, n
    if c.profile == SRTP_NONE:
        return length
    n = length - c.tag_len
    if n < 12:
        return ST_TRUNCATED
    st = rtp_parse(buf, n, &h)
    if st != ST_OK and st != ST_BAD_PADDING:    # padding is only readable once decrypted
        return st
    # an unknown SSRC gets a stream only once its first packet authenticates (forged packets from a
    # bound address must not fill the context)
    s = _stream_find(c, h.ssrc)
    if s == NULL:
        index = h.seq                       # a new stream starts with ROC 0
    else:
        index = _estimate_index(s, h.seq)
    if s != NULL and s.have_seq and _rtp_replayed(s.replay, (<uint64_t>s.roc << 16) | s.s_l, index):
        c.replayed += 1
        return ST_REPLAY
    if c.profile == SRTP_AES128_CM_SHA1_80:
        wr32(roc, <uint32_t>(index >> 16))
        st = _hmac80(c.rtp_hmac, buf, n, roc, 4, tag)
        if st != ST_OK:
            return st
        if CRYPTO_memcmp(tag, buf + n, 10) != 0:
            c.auth_fail += 1
            return ST_AUTH_FAIL
        _cm_iv(iv, c.rtp_salt, h.ssrc, index)
        st = _ctr(c.rtp_enc, iv, buf + h.header_len, n - h.header_len)
    else:
        _gcm_iv(iv, c.rtp_salt, h.ssrc, <uint32_t>(index >> 16), h.seq, 0)
        st = _gcm_open(c.rtp_dec, iv, buf, h.header_len, NULL, 0, buf + h.header_len,
                       n - h.header_len, buf + n)
        if st == ST_AUTH_FAIL:
            c.auth_fail += 1
    if st != ST_OK:
        return st
    if s == NULL:
        s = _stream_add(c, h.ssrc)
        if s == NULL:
            return ST_TOO_MANY_STREAMS
    _advance(s, index)
    return n


cdef int srtcp_protect(SrtpCtx *c, uint8_t *buf, int length, int cap) noexcept nogil:
    """RFC 3711 §3.4: encrypt after the first 8 bytes, E flag + 31-bit SRTCP index, tag."""
    cdef SrtpStream *s
    cdef uint32_t index
    cdef uint8_t iv[16]
    cdef uint8_t trailer[4]
    cdef int st
    if c.profile == SRTP_NONE:
        return length
    if length < 8:
        return ST_TRUNCATED
    if length + 4 + c.tag_len > cap:
        return ST_NO_ROOM
    s = _stream(c, rd32(buf + 4))
    if s == NULL:
        return ST_TOO_MANY_STREAMS
    # the first packet carries index 1, as libsrtp does (§3.3.2 leaves the start open)
    s.rtcp_index = (s.rtcp_index + 1) & 0x7fffffff
    s.have_rtcp = 1
    index = s.rtcp_index
    wr32(trailer, (<uint32_t>1 << 31) | index)
    if c.profile == SRTP_AES128_CM_SHA1_80:
        _cm_iv(iv, c.rtcp_salt, rd32(buf + 4), index)
        st = _ctr(c.rtcp_enc, iv, buf + 8, length - 8)
        if st != ST_OK:
            return st
        memcpy(buf + length, trailer, 4)
        st = _hmac80(c.rtcp_hmac, buf, length + 4, NULL, 0, buf + length + 4)
    else:
        # RFC 7714 §9: AAD = header (8 bytes) + E|index; the trailer follows the tag
        _gcm_iv(iv, c.rtcp_salt, rd32(buf + 4), index, 0, 1)
        st = _gcm_seal(c.rtcp_enc, iv, buf, 8, trailer, 4, buf + 8, length - 8, buf + length)
        memcpy(buf + length + 16, trailer, 4)
    return length + 4 + c.tag_len if st == ST_OK else st


cdef int srtcp_unprotect(SrtpCtx *c, uint8_t *buf, int length) noexcept nogil:
    cdef SrtpStream *s
    cdef uint32_t trailer, index
    cdef uint8_t iv[16]
    cdef uint8_t tag[10]
    cdef int st, n, encrypted
    if c.profile == SRTP_NONE:
        return length
    n = length - 4 - c.tag_len
    if n < 8:
        return ST_TRUNCATED
    trailer = rd32(buf + n + c.tag_len) if c.profile != SRTP_AES128_CM_SHA1_80 else rd32(buf + n)
    encrypted = trailer >> 31
    index = trailer & 0x7fffffff
    s = _stream_find(c, rd32(buf + 4))     # created only once the tag checks (below)
    if s != NULL and s.have_rtcp and _replayed(s.rtcp_replay, s.rtcp_index, index):
        c.replayed += 1
        return ST_REPLAY
    if c.profile == SRTP_AES128_CM_SHA1_80:
        st = _hmac80(c.rtcp_hmac, buf, n + 4, NULL, 0, tag)
        if st != ST_OK:
            return st
        if CRYPTO_memcmp(tag, buf + n + 4, 10) != 0:
            c.auth_fail += 1
            return ST_AUTH_FAIL
        if encrypted:
            _cm_iv(iv, c.rtcp_salt, rd32(buf + 4), index)
            st = _ctr(c.rtcp_enc, iv, buf + 8, n - 8)
    else:
        _gcm_iv(iv, c.rtcp_salt, rd32(buf + 4), index, 0, 1)
        if encrypted:
            st = _gcm_open(c.rtcp_dec, iv, buf, 8, buf + n + 16, 4, buf + 8, n - 8, buf + n)
        else:
            # RFC 7714 §9.2: unencrypted SRTCP authenticates the whole packet as AAD
            st = _gcm_open(c.rtcp_dec, iv, buf, n, buf + n + 16, 4, NULL, 0, buf + n)
        if st == ST_AUTH_FAIL:
            c.auth_fail += 1
    if st != ST_OK:
        return st
    if s == NULL:
        s = _stream_add(c, rd32(buf + 4))
        if s == NULL:
            return ST_TOO_MANY_STREAMS
    if not s.have_rtcp or index > s.rtcp_index:
        if s.have_rtcp and index - s.rtcp_index < 64:
            s.rtcp_replay = (s.rtcp_replay << (index - s.rtcp_index)) | 1
        else:
            s.rtcp_replay = 1
        s.rtcp_index = index
        s.have_rtcp = 1
    else:
        s.rtcp_replay |= (<uint64_t>1) << (s.rtcp_index - index)
    return n


cdef class SrtpContext:
    """One direction's SRTP+SRTCP session keys (derived from a master key and salt)."""
    cdef SrtpCtx *ctx
    cdef readonly str profile

    def __cinit__(self, str profile, bytes master_key=b"", bytes master_salt=b""):
        cdef int p
        if profile not in PROFILES:
            raise ValueError("unknown SRTP profile " + profile)
        p = PROFILES[profile]
        if p != SRTP_NONE and (len(master_key), len(master_salt)) != PROFILE_KEY_SALT[profile]:
            raise ValueError("master key/salt length does not match " + profile)
        self.ctx = <SrtpCtx *>calloc(1, sizeof(SrtpCtx))
        if self.ctx == NULL:
            raise MemoryError()
        self.profile = profile
        if srtp_ctx_init(self.ctx, p, <const uint8_t *>master_key if master_key else NULL,
                         <const uint8_t *>master_salt if master_salt else NULL) != ST_OK:
            raise RuntimeError("OpenSSL refused the SRTP keys")

    def __dealloc__(self):
        if self.ctx != NULL:
            srtp_ctx_free(self.ctx)
            free(self.ctx)
            self.ctx = NULL

    cdef bytes _run(self, bytes data, int which):
        cdef int n = len(data), r
        cdef uint8_t *buf = <uint8_t *>malloc(n + SRTP_MAX_TRAILER)
        if buf == NULL:
            raise MemoryError()
        memcpy(buf, <const uint8_t *>data, n)
        if which == 0:
            r = srtp_protect(self.ctx, buf, n, n + SRTP_MAX_TRAILER)
        elif which == 1:
            r = srtp_unprotect(self.ctx, buf, n)
        elif which == 2:
            r = srtcp_protect(self.ctx, buf, n, n + SRTP_MAX_TRAILER)
        else:
            r = srtcp_unprotect(self.ctx, buf, n)
        try:
            if r < 0:
                raise ValueError("SRTP: " + _DROP_NAMES.get(r, str(r)))
            return bytes(buf[:r])
        finally:
            free(buf)

    def protect(self, bytes data):
        return self._run(data, 0)

    def unprotect(self, bytes data):
        return self._run(data, 1)

    def protect_rtcp(self, bytes data):
        return self._run(data, 2)

    def unprotect_rtcp(self, bytes data):
        return self._run(data, 3)

    @property
    def stats(self):
        return {"auth_fail": self.ctx.auth_fail, "replayed": self.ctx.replayed,
                "streams": self.ctx.nstreams}


def split_keying_material(bytes material, str profile, bint is_server):
    """RFC 5764 §4.2 layout: client key | server key | client salt | server salt.

    Returns ((local_key, local_salt), (remote_key, remote_salt)) for this side."""
    kl, sl = PROFILE_KEY_SALT[profile]
    if len(material) < 2 * (kl + sl):
        raise ValueError("keying material too short for " + profile)
    ck, sk = material[:kl], material[kl:2 * kl]
    cs, ss = material[2 * kl:2 * kl + sl], material[2 * kl + sl:2 * (kl + sl)]
    if is_server:
        return (sk, ss), (ck, cs)
    return (ck, cs), (sk, ss)


def keying_material_length(str profile):
    kl, sl = PROFILE_KEY_SALT[profile]
    return 2 * (kl + sl)
