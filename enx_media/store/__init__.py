"""Durable state of the control plane: the repository interfaces (``repositories``) and their backends
(``sqlite``, the default). A new backend is one module implementing ``repositories.Store``."""
from .repositories import (NODE_RESTART, AppRecord, AppRepository, CdrRow, ChatMessageRecord, ClaimOutcome,
                           DeliveryRecord, OutboxEvent, ParticipantRecord, RecordingRecord, RecordingRepository,
                           RoomDeletion, RoomRecord, RoomRepository, SessionRecord, SessionRepository, Store,
                           TokenRecord, TokenRepository, TranscriptRecord, TranscriptRepository, WebhookRecord,
                           WebhookRepository)
from .sqlite import SqliteStore

__all__ = ["NODE_RESTART", "AppRecord", "AppRepository", "CdrRow", "ChatMessageRecord", "ClaimOutcome",
           "DeliveryRecord", "OutboxEvent", "ParticipantRecord", "RecordingRecord", "RecordingRepository",
           "RoomDeletion", "RoomRecord", "RoomRepository", "SessionRecord", "SessionRepository", "SqliteStore",
           "Store", "TokenRecord", "TokenRepository", "TranscriptRecord", "TranscriptRepository", "WebhookRecord",
           "WebhookRepository"]
