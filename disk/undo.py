"""Undo steps for what ``install`` changes on the system, kept safe from SIGINT and SIGTERM.

Within an :class:`Undo` a signal never interrupts Python code at a random
point: it is recorded, and becomes a :class:`KeyboardInterrupt` only inside
an :meth:`Undo.interruptible` section (the long work: formatting, copying)
or at the end of one.  A setup step (attach a loop device, mount, make a
folder, create the image) therefore runs and registers its undo step with
no signal between the two, and the clean-up, which runs every registered
step last-in first-out, cannot be cut short.  The programs a setup or
clean-up step runs start with SIGINT and SIGTERM blocked (:meth:`Undo.held`),
so a Ctrl-C sent to the whole process group does not kill ``losetup`` or
``umount`` half-way either.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from iscsiboot.output import warn

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass(frozen=True, eq=False)  # steps compare by identity
class _Step:
    what: str
    undo: Callable[[], bool]  # False: not undone (a warning was given)
    only_if_clean: bool  # skipped when a step undone before it failed


class Undo:
    """A stack of undo steps, and the signal handling that keeps them whole (main thread only)."""

    def __init__(self) -> None:
        self._steps: list[_Step] = []
        self._armed = False
        self._pending: int | None = None
        self._raised = False
        self._previous: dict[int, Any] = {}
        self._kept: list[_Step] = []

    # ------------------------------------------------------------ signals

    def _handler(self, signum: int, _frame: FrameType | None) -> None:
        if self._armed and not self._raised:
            self._raised = True
            raise KeyboardInterrupt
        self._pending = signum

    def check(self) -> None:
        """Raise the KeyboardInterrupt of a signal that arrived outside an interruptible section."""
        if self._pending is not None and not self._raised:
            self._raised = True
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """A section of work that a signal may stop at any point (nothing to register inside)."""
        self.check()
        self._armed = True
        try:
            yield
        finally:
            self._armed = False
        self.check()

    @staticmethod
    @contextlib.contextmanager
    def held() -> Iterator[None]:
        """SIGINT and SIGTERM blocked for this thread and the programs it starts meanwhile."""
        old = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    # ------------------------------------------------------------ steps

    def push(self, what: str, undo: Callable[[], bool], *, only_if_clean: bool = False) -> _Step:
        """Register ``undo``; call it right after the effect it undoes, with no work in between."""
        step = _Step(what, undo, only_if_clean)
        self._steps.append(step)
        return step

    def folder(self, prefix: str, *, parent: Path | None = None) -> Path:
        """A new temporary folder, its removal with all it holds registered with it (no signal in between).

        Called in an interruptible section too: a signal meanwhile waits until the step is registered.
        """
        armed, self._armed = self._armed, False
        try:
            with self.held():
                path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
                self.push(f"remove {path}", lambda: removed(path, lambda: shutil.rmtree(path)))
        finally:
            self._armed = armed
        if armed:
            self.check()
        return path

    def keep(self, step: _Step) -> None:
        """Keep the effect of ``step`` when the whole operation ends without a signal or an error."""
        self._kept.append(step)

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """Undo, on every way out, the steps registered within."""
        mark = len(self._steps)
        try:
            yield
        finally:
            self._unwind(mark)

    def _unwind(self, mark: int) -> None:
        clean = True
        with self.held():
            while len(self._steps) > mark:
                step = self._steps.pop()
                if step.only_if_clean and not clean:
                    warn(f"clean-up: did not {step.what}: an earlier clean-up step failed")
                    continue
                try:
                    done = step.undo()
                except Exception as exc:  # a failed undo is a warning, never a second exception
                    warn(f"clean-up: cannot {step.what}: {exc}")
                    done = False
                clean = clean and done

    # ------------------------------------------------------------ the whole operation

    def __enter__(self) -> Undo:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handler)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        interrupted = kind is None and self._pending is not None and not self._raised
        if kind is None and not interrupted:
            self._steps = [step for step in self._steps if step not in self._kept]
        self._unwind(0)
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        if interrupted:
            raise KeyboardInterrupt
        if kind is None and self._pending is not None:
            signal.raise_signal(self._pending)  # arrived during the final clean-up: the work is done


def removed(path: Path, remove: Callable[[], None]) -> bool:
    """An undo step's removal of ``path`` by ``remove``: False, with a warning, when it stays."""
    try:
        remove()
    except FileNotFoundError:
        pass
    except OSError as exc:
        warn(f"clean-up: cannot remove {path}: {exc.strerror}")
        return False
    return True
