"""The suppression-state store: a protocol, its Redis implementation and an in-memory fake."""

from worker.state.errors import GenerationLost, ProgressConflict
from worker.state.store import Snapshot, StateStore, StoreStatus

__all__ = ["GenerationLost", "ProgressConflict", "Snapshot", "StateStore", "StoreStatus"]
