"""The MCU's audio mix (ext/mixer.pxi): the full mix and mix-minus in 16 bits with saturation, checked
against numpy, and tones that are found (FFT) where they should be and not where they should not."""
import numpy as np
import pytest

from enx_media._native import _core

RATE, FRAME = 48000, 960


def tone(freq, amp=8000, n=FRAME):
    t = np.arange(n) / RATE
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def peak_freqs(x, k):
    spectrum = np.abs(np.fft.rfft(x.astype(float)))
    return set(np.round(np.fft.rfftfreq(len(x), 1 / RATE)[np.argsort(spectrum)[-k:]]).astype(int))


@pytest.mark.parametrize("n", [1, 2, 10, 50])
def test_mix_and_mix_minus_match_numpy_with_saturation(n):
    rng = np.random.default_rng(n)
    inputs = rng.integers(-20000, 20000, (n, FRAME), dtype=np.int16)
    full, minus = np.empty(FRAME, np.int16), np.empty((n, FRAME), np.int16)
    _core.mix(inputs, full, minus)
    total = inputs.astype(np.int32).sum(axis=0)
    assert (full == np.clip(total, -32768, 32767)).all()
    assert (minus == np.clip(total[None, :] - inputs.astype(np.int32), -32768, 32767)).all()


def test_each_publisher_hears_the_others_but_not_itself():
    freqs = [300, 500, 700, 900]           # whole cycles in 20 ms: one FFT bin each
    inputs = np.stack([tone(f) for f in freqs])
    full, minus = np.empty(FRAME, np.int16), np.empty((4, FRAME), np.int16)
    _core.mix(inputs, full, minus)
    assert peak_freqs(full, 4) == set(freqs)
    for i, f in enumerate(freqs):
        assert peak_freqs(minus[i], 3) == set(freqs) - {f}


def test_bad_shapes_are_errors_and_no_inputs_is_silence():
    full = np.ones(FRAME, np.int16)
    _core.mix(np.zeros((0, FRAME), np.int16), full)
    assert not full.any()
    with pytest.raises(ValueError):
        _core.mix(np.zeros((2, FRAME), np.int16), np.zeros(FRAME - 1, np.int16))
    with pytest.raises(ValueError):
        _core.mix(np.zeros((2, FRAME), np.int16), np.zeros(FRAME, np.int16), np.zeros((3, FRAME), np.int16))
    with pytest.raises((ValueError, TypeError)):
        _core.mix(np.zeros((2, FRAME), np.float32), np.zeros(FRAME, np.int16))
