"""Phase deadlines: a point in monotonic time (standard library only, so PID 1's start-up can use it)."""

from __future__ import annotations

import time

TYPE_CHECKING = False  # collections.abc imports collections: not before PID 1's first fork
if TYPE_CHECKING:
    from collections.abc import Callable

    Clock = Callable[[], float]


class Deadline:
    """A point in monotonic time; ``remaining()`` never goes below zero."""

    def __init__(self, seconds: float, clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self.start = clock()
        self.seconds = seconds
        self.at = self.start + seconds

    def remaining(self) -> float:
        return max(0.0, self.at - self.clock())

    def elapsed(self) -> float:
        return self.clock() - self.start

    def expired(self) -> bool:
        return self.clock() >= self.at
