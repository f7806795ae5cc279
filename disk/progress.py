"""Progress of a long transfer, on standard error.

On a terminal a bar redrawn in place (bytes, rate, time left); otherwise one
plain line per tenth of the way, so a log or a pipe reads well.  The text is
made by :func:`bar_text` and :func:`line_text` (pure); :class:`Progress` only
decides when to draw.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

BAR_WIDTH = 24
REDRAW = 0.2  # seconds between two redraws of the bar
STEPS = 10  # plain lines per phase


def human(n: float) -> str:
    """``n`` bytes with one decimal in the largest binary unit it reaches (``17.4 MiB``)."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def _rate(done: int, elapsed: float) -> float:
    return done / elapsed if elapsed > 0 else 0.0


def _left(done: int, whole: int, elapsed: float) -> str:
    rate = _rate(done, elapsed)
    if rate <= 0 or done >= whole:
        return "--"
    seconds = int((whole - done) / rate + 0.5)
    return f"{seconds // 60}:{seconds % 60:02d}"


def bar_text(what: str, done: int, whole: int, elapsed: float) -> str:
    """``writing [#######.....]  58%  17.4 MiB of 30.0 MiB  21.0 MiB/s  0:01 left``."""
    share = done / whole if whole else 1.0
    filled = int(share * BAR_WIDTH)
    bar = "#" * filled + "." * (BAR_WIDTH - filled)
    return (
        f"{what} [{bar}] {share * 100:3.0f}%  {human(done)} of {human(whole)}  "
        f"{human(_rate(done, elapsed))}/s  {_left(done, whole, elapsed)} left"
    )


def line_text(what: str, done: int, whole: int, elapsed: float) -> str:
    """``writing: 58% (17.4 MiB of 30.0 MiB, 21.0 MiB/s)``."""
    share = done / whole if whole else 1.0
    return f"{what}: {share * 100:.0f}% ({human(done)} of {human(whole)}, {human(_rate(done, elapsed))}/s)"


class Progress:
    """One phase at a time: :meth:`begin`, :meth:`advance` as bytes go, :meth:`end`."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        bar: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.bar = self.stream.isatty() if bar is None else bar
        self.clock = clock
        self.what = ""
        self.whole = 0
        self.done = 0
        self._start = 0.0
        self._drawn = 0.0
        self._step = 0

    def begin(self, what: str, whole: int) -> None:
        self.what, self.whole, self.done = what, whole, 0
        self._start = self._drawn = self.clock()
        self._step = 0

    def advance(self, count: int) -> None:
        self.done += count
        now = self.clock()
        if self.bar:
            if now - self._drawn >= REDRAW:
                self._drawn = now
                self._write("\r" + bar_text(self.what, self.done, self.whole, now - self._start))
            return
        step = self.done * STEPS // self.whole if self.whole else STEPS
        if step > self._step and self.done < self.whole:
            self._step = step
            self._write(line_text(self.what, self.done, self.whole, now - self._start) + "\n")

    def end(self) -> float:
        """Close the phase with its last line; the seconds it took."""
        elapsed = self.clock() - self._start
        if self.bar:
            self._write("\r" + bar_text(self.what, self.done, self.whole, elapsed) + "\n")
        else:
            self._write(line_text(self.what, self.done, self.whole, elapsed) + "\n")
        return elapsed

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
