"""Room policy: who may enter, publish, see whom, hold the floor and moderate. Pure functions of the
room's settings and the people in it, so each rule is in one place and testable without media."""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from .. import errors as E
from ..control.rooms import MODE_CAPACITY, Room

if TYPE_CHECKING:
    from .live import Participant


def check_capacity(room: Room, present: Iterable["Participant"], role: str) -> None:
    """A join of `role` fits the mode's cap and the room's moderator / participant counts."""
    present = list(present)
    cap = MODE_CAPACITY[room.mode]
    if len(present) >= cap:
        raise E.CapacityExceeded(f"{room.mode} rooms hold at most {cap} people and this one is full")
    moderators = sum(1 for p in present if p.role == "moderator")
    others = len(present) - moderators
    if role == "moderator" and moderators >= room.settings["moderators"]:
        raise E.CapacityExceeded(f"this room admits {room.settings['moderators']} moderator(s)")
    if role != "moderator" and others >= room.settings["participants"]:
        raise E.CapacityExceeded(f"this room admits {room.settings['participants']} participant(s)")


def check_publish(room: Room, p: "Participant") -> None:
    if room.mode == "p2p":
        raise E.Forbidden("p2p rooms carry media peer to peer: use relay messages, not publish")
    if p.role == "viewer":
        raise E.Forbidden("viewers do not publish")
    if room.mode == "lecture" and p.role != "moderator" and not p.floor:
        raise E.Forbidden("in a lecture only moderators publish; request the floor first")


def check_subscribe(room: Room) -> None:
    if room.mode == "p2p":
        raise E.Forbidden("p2p rooms carry media peer to peer: use relay messages")


def check_relay(room: Room) -> None:
    if room.mode != "p2p":
        raise E.Forbidden("relay is for p2p rooms; other rooms publish and subscribe through the node")


def check_moderator(p: "Participant", action: str) -> None:
    if p.role != "moderator":
        raise E.Forbidden(f"only moderators {action}")


def check_floor(room: Room, p: "Participant", action: str) -> None:
    """Floor control exists in lectures: participants request it, moderators grant and revoke it,
    its holder releases it."""
    if room.mode != "lecture":
        raise E.Forbidden("floor control exists in lecture rooms")
    if action == "request":
        if p.role != "participant":
            raise E.Forbidden("only participants request the floor")
    elif action == "release":
        if not p.floor:
            raise E.Conflict("you do not hold the floor")
    else:
        check_moderator(p, "grant or revoke the floor")


def check_floor_target(target: "Participant", action: str) -> None:
    """Whom a moderator grants the floor to or revokes it from."""
    if target.role != "participant":
        raise E.ValidationFailed("the floor is granted to participants")
    if action == "revoke" and not target.floor:
        raise E.Conflict("that participant does not hold the floor")


def announced(room: Room, p: "Participant") -> bool:
    """Whether everyone hears about p joining or leaving. In a lecture an audience member is announced
    to the moderators only: 2000 people announcing themselves to each other would be 4 million
    messages."""
    return not (room.mode == "lecture" and p.role != "moderator" and not p.floor)


def visible_to(room: Room, viewer: "Participant", everyone: Iterable["Participant"]) -> list["Participant"]:
    """Who a participant is shown in its join reply."""
    if room.mode == "lecture" and viewer.role != "moderator":
        return [x for x in everyone if x.role == "moderator" or x.floor or x is viewer]
    return list(everyone)
