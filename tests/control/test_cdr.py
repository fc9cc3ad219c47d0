"""The CDR's arithmetic on the event stream, against a real SQLite file: legs, quality windows, totals that
drop when a stream closes, simulcast layer shares, published and subscribed minutes, the crash rule."""
from enx_media import events as ev
from enx_media.control.cdr import CdrRecorder, CdrService, entry
from enx_media.control.sessions import SessionRecorder, SessionService
from enx_media.store import SqliteStore


def sample(pid, at, *, out=0, lost=0, b_in=0, b_out=0, received=0, jitter=0.0, rtt=0.0, layers=None, freezes=0):
    return ev.QualitySample("s1", "r1", "a1", participant_id=pid, streams_sent=0, streams_received=received,
                            packets_in=0, bytes_in=b_in, packets_out=out, bytes_out=b_out, packets_lost=lost,
                            keyframe_requests=0, freezes=freezes, fraction_lost=0.0, jitter_ms=jitter, rtt_ms=rtt,
                            layers=layers or {}, at=at)


def session(tmp_path):
    store = SqliteStore(tmp_path / "enx.sqlite3")
    bus = ev.EventBus()
    bus.subscribe(SessionRecorder(store))
    bus.subscribe(CdrRecorder(store))
    bus.publish(ev.SessionStarted("s1", "r1", "a1", room_details={"name": "r"}, at=1000.0))
    bus.publish(ev.ParticipantJoined("s1", "r1", "a1", participant_id="p1", user_ref="u1", name="U", role="moderator",
                                     token_id="t", at=1000.0))
    return store, bus


def test_windows_averages_and_minutes(tmp_path):
    store, bus = session(tmp_path)
    bus.publish(ev.StreamPublished("s1", "r1", "a1", participant_id="p1", stream_id="v", kind="video", codec="vp8",
                                   at=1000.0))
    bus.publish(ev.StreamPublished("s1", "r1", "a1", participant_id="p1", stream_id="sc", kind="video", codec="vp8",
                                   source="screen", at=1030.0))
    bus.publish(sample("p1", 1010.0, out=1000, lost=0, b_out=125_000, received=2, jitter=2.0, rtt=10.0,
                       layers={"f": 1}))
    bus.publish(sample("p1", 1020.0, out=2000, lost=300, b_out=250_000, received=2, jitter=6.0, rtt=30.0,
                       layers={"q": 1}))
    # a consumer closed: the totals dropped; the window counts what the rest sent
    bus.publish(sample("p1", 1030.0, out=500, lost=0, b_out=50_000, received=1, layers={"q": 1}, freezes=3))
    bus.publish(ev.StreamUnpublished("s1", "r1", "a1", participant_id="p1", stream_id="v", reason="x", at=1040.0))
    bus.publish(ev.ParticipantLeft("s1", "r1", "a1", participant_id="p1", reason="left", at=1060.0))
    bus.publish(ev.SessionEnded("s1", "r1", "a1", reason="last-left", at=1060.0))
    total, rows = store.sessions.cdr("a1", session_id="s1")
    e = entry(rows[0])
    q = e["quality"]
    assert total == 1 and q["samples"] == 3
    assert q["packet_loss"] == {"average": round(300 / 2500, 4), "worst_window": 0.3}
    assert q["jitter_ms"] == {"average": 2.67, "max": 6.0} and q["rtt_ms"]["max"] == 30.0
    assert q["bitrate_received_bps"]["max"] == 100_000 and q["freezes"] == 3
    assert q["layers"] == {"f": round(10 / 30, 3), "q": round(20 / 30, 3)}
    assert e["room"]["duration"] == 1.0 and e["usage"]["connect_minutes"] == 1.0
    # camera 1000..1040, screen 1030..1060 (open until the leave)
    assert e["usage"]["published_minutes"] == round(40 / 60, 3) and e["usage"]["screen_minutes"] == 0.5
    assert e["published_track"] == {"audio": False, "video": True, "screen": True}
    # 2 streams for 20 s, 1 for 10 s, then 1 more until the leave (30 s)
    assert e["usage"]["subscribed_minutes"] == round((2 * 10 + 2 * 10 + 1 * 10 + 30) / 60, 3)
    store.close()


def test_a_crash_leaves_the_record_as_of_its_last_save_and_the_restart_closes_it_there(tmp_path):
    store, bus = session(tmp_path)
    bus.publish(sample("p1", 1010.0, out=100, b_out=10_000, received=1))
    # the node dies here: no leave, no end. The next start:
    assert SessionService(store).close_dangling() == 1
    s = store.sessions.get("s1")
    assert (s.ended, s.end_reason) == (1010.0, "node-restart")
    e = entry(store.sessions.cdr("a1")[1][0])
    assert e["room"]["disconnect_dt"] is not None and e["room"]["duration"] == round(10 / 60, 3)
    assert e["quality"]["samples"] == 1
    assert CdrService(store).query("a1", session_id="s1")[0] == 1
    store.close()
