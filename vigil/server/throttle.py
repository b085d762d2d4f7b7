"""Login rate limiting: a pure policy over failure times, and a small keyed store of them (per user, per address).

A key (``user:alice`` or ``addr:10.0.0.7``) with ``max_failures`` failed logins within ``window_s`` is refused until
the oldest of those failures leaves the window; a success clears the user's key (not the address's). Times are
monotonic seconds passed in, so tests drive it with a fake clock. State is in memory: a restart forgets it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence

MAX_KEYS = 10_000  # keys kept at most (oldest forgotten first): a flood of addresses cannot exhaust memory


def retry_after_s(failures: Sequence[float], now: float, max_failures: int, window_s: float) -> float:
    """Seconds until another attempt is allowed (0: allowed now), given the key's failure times (oldest first)."""
    recent = [t for t in failures if now - t < window_s]
    if len(recent) < max_failures:
        return 0.0
    return window_s - (now - recent[-max_failures])


class LoginThrottle:
    def __init__(self, max_failures: int, window_s: float) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after_s(self, keys: Iterable[str], now: float) -> float:
        with self._lock:
            return max(
                (retry_after_s(self._failures.get(key, ()), now, self.max_failures, self.window_s) for key in keys),
                default=0.0,
            )

    def record_failure(self, keys: Iterable[str], now: float) -> None:
        with self._lock:
            for key in keys:
                times = self._failures.pop(key, None) or deque(maxlen=self.max_failures)
                times.append(now)
                self._failures[key] = times
            while len(self._failures) > MAX_KEYS:
                self._failures.popitem(last=False)

    def clear(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)
