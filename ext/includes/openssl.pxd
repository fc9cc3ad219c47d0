# OpenSSL 3 libcrypto: the EVP cipher interface and HMAC used for our own RFC 3711 / RFC 7714 framing
# (and HMAC-SHA1 for the STUN consent answers of stun.pxi).
cdef extern from "<openssl/evp.h>" nogil:
    ctypedef struct EVP_CIPHER:
        pass
    ctypedef struct EVP_CIPHER_CTX:
        pass
    ctypedef struct EVP_MD:
        pass
    ctypedef struct ENGINE:
        pass
    EVP_CIPHER_CTX *EVP_CIPHER_CTX_new()
    void EVP_CIPHER_CTX_free(EVP_CIPHER_CTX *c)
    const EVP_CIPHER *EVP_aes_128_ctr()
    const EVP_CIPHER *EVP_aes_256_ctr()
    const EVP_CIPHER *EVP_aes_128_gcm()
    const EVP_CIPHER *EVP_aes_256_gcm()
    const EVP_CIPHER *EVP_aes_128_ecb()
    const EVP_MD *EVP_sha1()
    int EVP_EncryptInit_ex(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *t, ENGINE *impl,
                           const unsigned char *key, const unsigned char *iv)
    int EVP_EncryptUpdate(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl,
                          const unsigned char *inp, int inl)
    int EVP_EncryptFinal_ex(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl)
    int EVP_DecryptInit_ex(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *t, ENGINE *impl,
                           const unsigned char *key, const unsigned char *iv)
    int EVP_DecryptUpdate(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl,
                          const unsigned char *inp, int inl)
    int EVP_DecryptFinal_ex(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl)
    int EVP_CIPHER_CTX_ctrl(EVP_CIPHER_CTX *ctx, int typ, int arg, void *ptr)
    int EVP_CIPHER_CTX_set_padding(EVP_CIPHER_CTX *ctx, int pad)
    int EVP_CTRL_GCM_SET_IVLEN
    int EVP_CTRL_GCM_GET_TAG
    int EVP_CTRL_GCM_SET_TAG

cdef extern from "<openssl/hmac.h>" nogil:
    ctypedef struct HMAC_CTX:
        pass
    HMAC_CTX *HMAC_CTX_new()
    void HMAC_CTX_free(HMAC_CTX *ctx)
    int HMAC_Init_ex(HMAC_CTX *ctx, const void *key, int key_len, const EVP_MD *md, ENGINE *impl)
    int HMAC_Update(HMAC_CTX *ctx, const unsigned char *data, size_t len)
    int HMAC_Final(HMAC_CTX *ctx, unsigned char *md, unsigned int *len)
    unsigned char *HMAC(const EVP_MD *md, const void *key, int key_len, const unsigned char *data,
                        size_t data_len, unsigned char *out, unsigned int *out_len)

cdef extern from "<openssl/crypto.h>" nogil:
    int CRYPTO_memcmp(const void *a, const void *b, size_t n)
