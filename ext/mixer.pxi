# The MCU's audio mix: n inputs of 16-bit PCM (one 20 ms frame each, decoded Opus at 48 kHz) summed in 32
# bits and saturated to 16: the full mix for subscribers, and per input the mix without it (mix-minus: a
# publisher must not hear itself back). Integer all the way (no float round trip), without the GIL.

cdef void mix_frames(const int16_t *inp, int n, int samples, int16_t *full, int16_t *minus) noexcept nogil:
    """inp: n rows of `samples`; full: one row; minus: n rows, or NULL."""
    cdef int i, k
    cdef int32_t acc, v
    for k in range(samples):
        acc = 0
        for i in range(n):
            acc += inp[i * samples + k]
        full[k] = <int16_t>(32767 if acc > 32767 else (-32768 if acc < -32768 else acc))
        if minus != NULL:
            for i in range(n):
                v = acc - inp[i * samples + k]
                minus[i * samples + k] = <int16_t>(32767 if v > 32767 else (-32768 if v < -32768 else v))


def mix(const int16_t[:, ::1] inputs not None, int16_t[::1] full not None, int16_t[:, ::1] minus=None):
    """Mix inputs (n, samples) into full (samples,), saturating; with minus (n, samples), row i gets the mix
    of every input but i. The GIL is released."""
    cdef int n = <int>inputs.shape[0], samples = <int>inputs.shape[1]
    cdef int16_t *m = NULL
    if full.shape[0] != samples:
        raise ValueError("full must hold one frame of the inputs' length")
    if minus is not None:
        if minus.shape[0] != n or minus.shape[1] != samples:
            raise ValueError("minus must be (inputs, samples)")
        if n:
            m = &minus[0, 0]
    if n == 0 or samples == 0:
        for k in range(full.shape[0]):
            full[k] = 0
        return
    with nogil:
        mix_frames(&inputs[0, 0], n, samples, &full[0], m)
