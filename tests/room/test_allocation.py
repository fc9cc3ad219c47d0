"""Bandwidth allocation across one subscriber's streams (enx_media/sfu/allocation.py): audio first, screen
shares next, then video by the size it is rendered at; a layer only if its rate fits; pausing only on
evidence; the probe target when a stream gets less than it asked for."""
from enx_media.sfu.allocation import AUDIO_BPS, HEADROOM, Want, allocate, layer_rates

LAYERS = [150_000.0, 500_000.0, 1_800_000.0]


def video(key, height=0, desired=2, rates=LAYERS, active=(True, True, True), screen=False):
    return Want(key, "video", desired, list(rates), list(active), screen=screen, height=height)


def picks(choices):
    return {c.key: ("paused" if c.paused else c.encoding) for c in choices}


def test_everything_fits_everyone_gets_what_it_asked_for():
    choices, probe = allocate(5e6, [Want("a", "audio", None, bps=40_000), video("big", 720), video("small", 180, 0)],
                              evidence=True)
    assert picks(choices) == {"big": 2, "small": 0} and probe is None


def test_the_larger_tile_goes_first_and_the_rest_gets_what_is_left():
    choices, probe = allocate(2.2e6, [video("small", 360, 1), video("big", 720)], evidence=True)
    assert picks(choices) == {"big": 2, "small": 0}
    assert [c.short for c in choices] == [False, True]
    # the probe is for the small one's step up, on top of what is allocated (audio none here)
    assert probe == (1_800_000 + 150_000 + 350_000) * HEADROOM


def test_a_screen_share_goes_before_a_larger_camera():
    choices, _ = allocate(2.0e6, [video("camera", 1080), video("screen", 360, screen=True)], evidence=True)
    assert picks(choices) == {"screen": 2, "camera": 0}


def test_audio_is_served_first():
    choices, _ = allocate(550_000, [Want("a", "audio", None), video("v", 720)], evidence=True)
    assert picks(choices) == {"v": 0}                        # 550k - 64k leaves 486k: below the 500k layer
    choices, _ = allocate(500_000 + AUDIO_BPS, [Want("a", "audio", None), video("v", 720)], evidence=True)
    assert picks(choices) == {"v": 1}


def test_what_does_not_fit_at_all_is_paused_only_on_evidence():
    wants = [video("first", 720), video("second", 360)]
    choices, probe = allocate(200_000, wants, evidence=True)
    assert picks(choices) == {"first": 0, "second": "paused"}
    assert probe is not None
    choices, _ = allocate(200_000, wants, evidence=False)     # the start default: nothing known, no pausing
    assert picks(choices) == {"first": 0, "second": 0}


def test_a_one_encoding_stream_flows_or_pauses_whole():
    one = Want("cam", "video", None, bps=900_000)
    assert picks(allocate(2e6, [one], evidence=True)[0]) == {"cam": None}
    assert picks(allocate(500_000, [one], evidence=True)[0]) == {"cam": "paused"}
    assert picks(allocate(500_000, [one], evidence=False)[0]) == {"cam": None}


def test_layers_not_arriving_are_not_picked_and_unknown_rates_are_guessed():
    choices, _ = allocate(5e6, [video("v", 720, active=(True, True, False))], evidence=True)
    assert picks(choices) == {"v": 1}
    rates = layer_rates(video("v", rates=[150_000, 0, 0]))
    assert rates[0] == 150_000 and rates[1] > rates[0] and rates[2] > rates[1]
    assert all(r > 0 for r in layer_rates(video("v", rates=[0, 0, 0])))


def test_nothing_arriving_keeps_the_consumer_where_it_is():
    choices, probe = allocate(1e6, [video("v", 720, desired=None)], evidence=True)
    assert picks(choices) == {"v": None} and probe is None


def test_the_current_layer_keeps_a_margin_but_not_on_a_congested_link():
    # 500 kbit/s layer, 450 kbit/s left: a spurious dip keeps it; a link that keeps losing does not
    current = video("v", 720, desired=1, rates=LAYERS[:2], active=(True, True))
    current.current = 1
    assert picks(allocate(450_000, [current], evidence=True)[0]) == {"v": 1}
    assert picks(allocate(450_000, [current], evidence=True, congested=True)[0]) == {"v": 0}
