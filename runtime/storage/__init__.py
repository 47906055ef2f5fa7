"""Storage: the Namespace seam and its backends (SQLite, etcd, memory for tests)."""

from runtime.storage.base import Backend, Entry, Namespace
from runtime.storage.etcd import EtcdBackend
from runtime.storage.memory import MemoryBackend
from runtime.storage.sqlite import SqliteBackend

__all__ = ["Backend", "Entry", "EtcdBackend", "MemoryBackend", "Namespace", "SqliteBackend"]
