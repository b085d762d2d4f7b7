"""A small time-bounded cache of answers that many pollers ask for at once (event pages, health).

Twenty operator pages polling the same event list every second would otherwise run the same query twenty times; the
key includes everything that changes the answer (the query, the caller's relevant permissions, how many events the
pipeline has published, the event marks' version), so a new event or an acknowledgement is visible at once and
anything else (retention, another process) within ``ttl_s``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable


class ResponseCache:
    def __init__(self, ttl_s: float, max_entries: int = 256, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[Hashable, tuple[float, bytes]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> bytes | None:
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or now - entry[0] > self.ttl_s:
                self.misses += 1
                return None
            self.hits += 1
            return entry[1]

    def put(self, key: Hashable, value: bytes) -> None:
        with self._lock:
            self._entries[key] = (self._clock(), value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
