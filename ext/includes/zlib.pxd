# zlib's CRC-32 (the STUN FINGERPRINT of stun.pxi, RFC 8489 §14.7).
cdef extern from "<zlib.h>" nogil:
    unsigned long crc32(unsigned long crc, const unsigned char *buf, unsigned int length)
