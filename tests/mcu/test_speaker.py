"""Active-speaker choice (enx_media.mcu.speaker): follows the louder publisher, with hysteresis: a short
burst from another does not take over, silence of the current one hands over."""
from enx_media.mcu.speaker import ActiveSpeaker

LOUD, SOFT, SILENT = 20.0, 40.0, 127.0


def run(s, script, step=0.25, t0=0.0):
    """script: [(seconds, {publisher: dBov})]; returns [(time, new speaker)] as they change."""
    changes, t = [], t0
    for seconds, levels in script:
        end = t + seconds
        while t < end - 1e-9:
            who = s.update(levels, t)
            if who is not None:
                changes.append((round(t, 2), who))
            t += step
    return changes, t


def test_the_first_speaker_is_taken_at_once_and_a_louder_one_after_a_while():
    s = ActiveSpeaker()
    changes, _ = run(s, [(1.0, {"a": LOUD, "b": SILENT}), (2.0, {"a": SOFT, "b": LOUD})])
    assert changes[0] == (0.0, "a")
    assert changes[1][1] == "b" and 1.75 <= changes[1][0] <= 2.0, changes


def test_a_cough_does_not_move_it_and_levels_within_the_margin_do_not_either():
    s = ActiveSpeaker()
    changes, t = run(s, [(1.0, {"a": SOFT}), (0.5, {"a": SOFT, "b": LOUD}), (1.0, {"a": SOFT})])
    assert changes == [(0.0, "a")], "a half-second burst from b"
    changes, _ = run(s, [(3.0, {"a": SOFT, "b": SOFT - 4})], t0=t)
    assert changes == [], "4 dB louder is within the margin"


def test_when_the_current_speaker_stops_the_next_takes_over_and_silence_keeps_the_last():
    s = ActiveSpeaker()
    run(s, [(1.0, {"a": LOUD})])
    changes, t = run(s, [(2.0, {"a": SILENT, "b": SOFT})], t0=1.0)
    assert changes and changes[0][1] == "b" and changes[0][0] <= 2.0
    changes, _ = run(s, [(3.0, {"a": SILENT, "b": SILENT})], t0=t)
    assert changes == [] and s.current == "b"
    s.forget("b")
    assert s.current is None and s.update({"a": LOUD}, 10.0) == "a"
