"""The suppression-state store: a protocol, its Redis implementation and an in-memory fake."""

from worker.state.store import Snapshot, StateStore, StoreStatus
from worker.state.errors import GenerationLost, ProgressConflict

__all__ = ["GenerationLost", "ProgressConflict", "Snapshot", "StateStore", "StoreStatus"]
