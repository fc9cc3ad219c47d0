"""Durable state of the control plane: the repository interfaces (``repositories``) and their backends
(``sqlite``, the default). A new backend is one module implementing ``repositories.Store``."""
from .repositories import (AppRecord, AppRepository, ChatMessageRecord, ClaimOutcome, ParticipantRecord,
                           RoomDeletion, RoomRecord, RoomRepository, SessionRecord, SessionRepository, Store,
                           TokenRecord, TokenRepository)
from .sqlite import SqliteStore

__all__ = ["AppRecord", "AppRepository", "ChatMessageRecord", "ClaimOutcome", "ParticipantRecord", "RoomDeletion",
           "RoomRecord", "RoomRepository", "SessionRecord", "SessionRepository", "SqliteStore", "Store",
           "TokenRecord", "TokenRepository"]
