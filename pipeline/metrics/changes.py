"""Whether the state database changed since the metrics last read it: the store's change mark
(`store/changes.py`: SQLite's data_version, PostgreSQL's current snapshot); where the database has
none, what was read is kept for `max_age` seconds.
"""

from __future__ import annotations

import threading
import time

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from pipeline.errors import StateError
from pipeline.store.changes import ChangeMark


class ChangeProbe:
    """Answers `changed()`: True on the first call, then whenever the database moved on (or,
    without a cheap signal, when `max_age` seconds have passed). Thread-safe."""

    def __init__(self, engine: Engine, *, max_age: float = 10.0) -> None:
        self.engine = engine
        self.max_age = max_age
        self._lock = threading.Lock()
        self._mark = ChangeMark(engine)
        self._seen: object | None = None

    def changed(self) -> bool:
        """Whether the database may hold something the last call did not see."""
        with self._lock:
            if self._mark.available:
                try:
                    mark: object | None = self._mark.read()
                except (SQLAlchemyError, StateError):
                    mark = None     # the caller reads again, and fails there with the reason
                if mark is not None and mark == self._seen:
                    return False
                self._seen = mark
                return True
            now = time.monotonic()
            if isinstance(self._seen, float) and now - self._seen < self.max_age:
                return False
            self._seen = now
            return True
