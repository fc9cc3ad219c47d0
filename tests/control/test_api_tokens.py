import datetime as dt
import time

import jwt
import pytest

from node_util import make_room
from enx_media import errors as E
from token_util import claims as claims_of, resign


def issue(api, room_id, **body):
    body.setdefault("user_id", "user_12345")
    body.setdefault("role", "participant")
    return api.post(f"/rooms/{room_id}/tokens", json=body)


def test_issue_and_verify(api, engine, creds):
    room = make_room(api)
    r = issue(api, room["room_id"], user_name="Alice", role="moderator", ttl=3600, data={"seat": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["result"] == 0 and body["role"] == "moderator"
    header = jwt.get_unverified_header(body["token"])
    assert header["alg"] == "HS256"
    claims = engine.tokens.verify(body["token"], room_id=room["room_id"])
    assert (claims.app_id, claims.room_id, claims.user_ref, claims.name, claims.role) == (
        creds[0], room["room_id"], "user_12345", "Alice", "moderator")
    assert claims.token_id == body["token_id"] and claims.data == {"seat": 3}
    assert 3590 <= claims.expires - time.time() <= 3600


def test_default_ttl_and_aliases(api, engine):
    room = make_room(api)
    r = api.post(f"/rooms/{room['room_id']}/tokens", json={"user_ref": "u9", "name": "Bo", "role": "viewer"})
    claims = engine.tokens.verify(r.json()["token"])
    assert claims.user_ref == "u9" and claims.name == "Bo" and claims.role == "viewer"
    assert 86390 <= claims.expires - claims.issued <= 86400


def test_unique_ids(api, engine):
    room = make_room(api)
    ids = {issue(api, room["room_id"]).json()["token_id"] for _ in range(5)}
    assert len(ids) == 5


@pytest.mark.parametrize("body, status, needle", [
    ({"user_id": "u"}, 422, "role is required"),
    ({"user_id": "u", "role": "admin"}, 422, "role must be one of"),
    ({"role": "moderator"}, 422, "is required"),
    ({"user_id": "u", "role": "moderator", "ttl": 10}, 422, "ttl must be"),
    ({"user_id": "u", "role": "moderator", "ttl": "abc"}, 422, "must be an integer"),
    ({"user_id": "u", "role": "moderator", "ttl": 10 ** 9}, 422, "ttl must be"),
    ({"user_id": "u", "role": "moderator", "extra": 1}, 422, "unknown field(s): extra"),
    ({"user_id": "", "role": "moderator"}, 422, "must not be empty"),
    ({"user_id": "a", "user_ref": "b", "role": "moderator"}, 422, "disagree"),
    ({"user_id": ["u"], "role": "moderator"}, 422, "must be a string"),
    ({"user_id": "u", "role": "moderator", "data": [1]}, 422, "data must be an object"),
])
def test_issue_validation(api, body, status, needle):
    room = make_room(api)
    r = api.post(f"/rooms/{room['room_id']}/tokens", json=body)
    assert r.status_code == status, r.text
    assert needle in r.json()["desc"]


def test_unknown_room(api):
    r = issue(api, "0" * 24)
    assert r.status_code == 404 and r.json()["error"] == "room not found"


def test_scheduled_room_token_window(api, engine):
    far = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S")
    room = make_room(api, settings={"scheduled": True, "scheduled_time": far, "duration": 30})
    r = issue(api, room["room_id"])
    assert r.status_code == 403 and r.json()["result"] == 1410
    soon = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M:%S")
    room = make_room(api, settings={"scheduled": True, "scheduled_time": soon, "duration": 30})
    r = issue(api, room["room_id"], ttl=86400)
    assert r.status_code == 200, r.text
    claims = engine.tokens.verify(r.json()["token"])
    start = dt.datetime.strptime(soon, "%Y-%m-%d %H:%M:%S").replace(tzinfo=dt.timezone.utc).timestamp()
    assert claims.expires == start + 30 * 60  # capped at the window's end


# --- verification: each refusal has its own error --------------------------------------------------
@pytest.fixture()
def issued(api):
    room = make_room(api)
    body = issue(api, room["room_id"], role="moderator").json()
    return room["room_id"], body["token"], body["token_id"]


def test_forged_signature(engine, issued):
    room_id, token, _ = issued
    with pytest.raises(E.TokenBadSignature):
        engine.tokens.verify(resign(token, b"x" * 32), room_id=room_id)
    head, body, sig = token.split(".")
    flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
    with pytest.raises(E.TokenBadSignature):
        engine.tokens.verify(f"{head}.{body}.{flipped}", room_id=room_id)


def test_tampered_claims(engine, issued, creds):
    room_id, token, _ = issued
    head, body, sig = token.split(".")
    other = jwt.encode({**claims_of(token), "role": "moderator", "sub": "mallory"}, "k",
                       algorithm="HS256").split(".")[1]
    with pytest.raises(E.TokenBadSignature):
        engine.tokens.verify(f"{head}.{other}.{sig}", room_id=room_id)


def test_alg_none_and_other_algorithms(engine, issued, creds):
    room_id, token, _ = issued
    secret = engine.apps.get(creds[0]).token_secret
    none_token = jwt.encode(claims_of(token), None, algorithm="none")
    with pytest.raises(E.TokenBadAlgorithm):
        engine.tokens.verify(none_token, room_id=room_id)
    with pytest.raises(E.TokenBadAlgorithm):
        engine.tokens.verify(resign(token, secret, alg="HS512"), room_id=room_id)


def test_expired_and_not_yet_valid(engine, issued, creds):
    room_id, token, _ = issued
    secret = engine.apps.get(creds[0]).token_secret
    past = int(time.time()) - 10
    with pytest.raises(E.TokenExpired):
        engine.tokens.verify(resign(token, secret, exp=past), room_id=room_id)
    with pytest.raises(E.TokenExpired):
        engine.tokens.verify(token, room_id=room_id, at=time.time() + 86401)
    with pytest.raises(E.TokenNotYetValid):
        engine.tokens.verify(resign(token, secret, nbf=int(time.time()) + 600), room_id=room_id)


def test_wrong_room(engine, issued):
    room_id, token, _ = issued
    with pytest.raises(E.TokenWrongRoom):
        engine.tokens.verify(token, room_id="f" * 24)


def test_malformed(engine):
    for bad in ("", "abc", "a.b.c", "x" * 9000, None, 42, "eyJhbGciOiJIUzI1NiJ9.e30.sig"):
        with pytest.raises(E.TokenError) as info:
            engine.tokens.verify(bad)
        assert type(info.value) in (E.TokenMalformed, E.TokenUnknownApp), bad


def test_unknown_issuer(engine, issued):
    room_id, token, _ = issued
    with pytest.raises(E.TokenUnknownApp):
        engine.tokens.verify(resign(token, b"k" * 32, iss="nobody"), room_id=room_id)


def test_revoked_over_api(api, engine, issued):
    room_id, token, token_id = issued
    engine.tokens.verify(token, room_id=room_id)
    r = api.delete(f"/rooms/{room_id}/tokens/{token_id}")
    assert r.status_code == 200 and r.json()["revoked"] is True
    with pytest.raises(E.TokenRevoked):
        engine.tokens.verify(token, room_id=room_id)
    assert api.delete(f"/rooms/{room_id}/tokens/{token_id}").status_code == 200  # idempotent
    assert api.delete(f"/rooms/{room_id}/tokens/{'0' * 32}").status_code == 404


def test_room_deletion_revokes(api, engine, issued):
    room_id, token, _ = issued
    assert api.delete(f"/rooms/{room_id}").status_code == 200
    with pytest.raises(E.TokenRevoked):
        engine.tokens.verify(token, room_id=room_id)


def test_single_use_per_session(engine, issued):
    room_id, token, _ = issued
    claims = engine.tokens.verify(token, room_id=room_id)
    engine.tokens.claim_for_session(claims, "session-1")
    engine.tokens.claim_for_session(claims, "session-1")  # rejoining the same session is fine
    with pytest.raises(E.TokenAlreadyUsed):
        engine.tokens.claim_for_session(claims, "session-2")


def test_error_codes_are_distinct():
    kinds = [E.TokenMalformed, E.TokenBadSignature, E.TokenExpired, E.TokenNotYetValid, E.TokenWrongRoom,
             E.TokenBadAlgorithm, E.TokenRevoked, E.TokenUnknownApp, E.TokenAlreadyUsed, E.TokenOutsideWindow]
    assert len({k.code for k in kinds}) == len(kinds)
