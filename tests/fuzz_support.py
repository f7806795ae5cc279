"""The fuzz tier's shared property: a parser of untrusted bytes returns a value or raises
one of the project's own errors, within a bounded time, and shows no secret.

(A message may hold a control character of the input: the console escapes it when it prints.)

The suite runs every property with a fixed, derandomized budget.  ``tools/fuzz.py`` runs
the same properties for longer: it sets ``ISCSIBOOT_FUZZ_EXAMPLES`` (examples per property
and round) and gives each round its own ``--hypothesis-seed``.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from types import FrameType
from typing import TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from iscsiboot.errors import IscsibootError

T = TypeVar("T")

#: Examples per property and round in a long run (unset: the suite's fixed budget).
LONG_EXAMPLES = os.environ.get("ISCSIBOOT_FUZZ_EXAMPLES")
#: One example that runs longer than this is a hang, whatever the budget.
HANG_SECONDS = 10.0
#: Parser runs since start-up (the long run reports it; an example may run several parsers).
COUNT = [0]


def budget(examples: int, *, deadline_ms: int = 2000) -> settings:
    """Settings for one property: ``examples`` in the suite, derandomized (the same examples on
    every run), or the long run's count with the seed of the round."""
    long_run = LONG_EXAMPLES is not None
    return settings(
        max_examples=int(LONG_EXAMPLES) if LONG_EXAMPLES is not None else examples,
        deadline=timedelta(milliseconds=deadline_ms),
        derandomize=not long_run,
        database=None,
        print_blob=True,
        report_multiple_bugs=long_run,  # the suite stops at the first failure (bounded shrinking)
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


class Hang(AssertionError):
    """One example ran longer than :data:`HANG_SECONDS`."""


@contextmanager
def bounded(seconds: float = HANG_SECONDS) -> Iterator[None]:
    """Fail the example (not the whole run) when the code inside does not return in time."""

    def expired(signum: int, frame: FrameType | None) -> None:
        raise Hang(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def clean(call: Callable[[], T], *, secrets: tuple[str, ...] = ()) -> T | IscsibootError:
    """Run a parser: its value, or the project's error it raised (anything else fails the example).

    An error's message contains none of ``secrets``.
    """
    COUNT[0] += 1
    try:
        with bounded():
            return call()
    except IscsibootError as exc:
        no_secret(str(exc), secrets)
        return exc


def no_secret(text: str, secrets: tuple[str, ...]) -> None:
    for secret in secrets:
        assert secret not in text, f"the secret {secret!r} shows in {text!r}"


# ---------------------------------------------------------------- mutations

#: Bytes that parsers treat specially: ends, signs, separators, the high bit.
_EDGE_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFF, 0xFE, 0x20, 0x2C, 0x3D, 0x3A, 0x22, 0x0A)


@st.composite
def mutants(draw: st.DrawFn, sample: bytes, *, edits: int = 8, window: int | None = None) -> bytes:
    """``sample`` with a few edits: bytes set, bits flipped, runs inserted, deleted or copied,
    the end cut.  ``window`` keeps edits in the first bytes (where the headers are)."""
    data = bytearray(sample)
    span = window or max(len(sample), 1)
    for _ in range(draw(st.integers(1, edits))):
        at = draw(st.integers(0, max(min(span, len(data)) - 1, 0)))
        kind = draw(st.integers(0, 6))
        if kind == 0 and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == 1 and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == 2 and data:
            data[at] = draw(st.sampled_from(_EDGE_BYTES))
        elif kind == 3:
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == 4:
            del data[at : at + draw(st.integers(1, 64))]
        elif kind == 5 and data:
            start = draw(st.integers(0, len(data) - 1))
            data[at:at] = data[start : start + draw(st.integers(1, 64))]
        elif kind == 6 and data:
            width = draw(st.sampled_from((2, 4, 8)))
            value = draw(st.sampled_from((0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 2**63)))
            data[at : at + width] = (value % (1 << (8 * width))).to_bytes(width, "little")
    if draw(st.integers(0, 9)) == 0:
        del data[draw(st.integers(0, len(data))) :]
    return bytes(data)


#: Characters that text parsers treat specially, and some that they should refuse.
EDGE_CHARS = (
    " \t\n\r\f\v\"',=:;@[]{}()<>#$\\/%&|*?!~`^+-._0123456789"
    "\x00\x1b\x7f\x85\xa0\u2028\u2029\u0661\u00b2\u0966\ufeff\ud800\U0001f600"
)
edge_text = st.text(st.sampled_from(EDGE_CHARS) | st.characters(), max_size=12)


@st.composite
def text_mutants(draw: st.DrawFn, sample: str, *, edits: int = 6) -> str:
    """``sample`` with a few text edits: characters replaced, inserted or deleted, a piece
    repeated, the end cut."""
    text = sample
    for _ in range(draw(st.integers(1, edits))):
        at = draw(st.integers(0, len(text)))
        kind = draw(st.integers(0, 3))
        if kind == 0:
            text = text[:at] + draw(edge_text) + text[at + 1 :]
        elif kind == 1:
            text = text[:at] + draw(edge_text) + text[at:]
        elif kind == 2:
            text = text[:at] + text[at + draw(st.integers(1, 20)) :]
        else:
            start = draw(st.integers(0, len(text)))
            text = text[:at] + text[start : start + draw(st.integers(1, 40))] + text[at:]
    if draw(st.integers(0, 9)) == 0:
        text = text[: draw(st.integers(0, len(text)))]
    return text
