"""Secrets (CHAP passwords) as a type of their own that never prints.

``str()``, ``repr()`` and ``format()`` of a :class:`Secret` give ``***``.  The
value is reached only through :meth:`Secret.reveal`, so every place that shows
a secret is explicit and easy to audit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"


class Secret:
    """An opaque string.  Equal to another Secret with the same value."""

    __slots__ = ("_value",)
    _value: str

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret takes a str")
        object.__setattr__(self, "_value", value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Secret is immutable")

    def reveal(self) -> str:
        return self._value

    def shown(self, show: bool) -> str:
        """The value when ``show`` is true, else the mask."""
        return self.reveal() if show else MASK

    def __len__(self) -> int:
        return len(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return format(MASK, spec)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("Secret cannot be pickled")


#: Shortest secret that :func:`mask` replaces wherever it stands as a whole token.
#: A shorter one (a port number, a letter) would mark ordinary words as the
#: secret; it is replaced only where a key that names a secret comes before it.
MIN_MASKED = 8
# Characters that continue a token: a match next to one of them is part of a longer word;
# "." and "/" do so only between two letters or digits (not at the end of a sentence).
_WORD_EXTRA = frozenset("-_~+")
_JOINERS = frozenset("./")
# A key that names a secret, then "=", ":" or blanks (and an opening quote), right before a value.
_SECRET_KEY = re.compile(r"(?i)(?:pass(?:word|wd)?|secret)[\"']?[ \t]*[=:]?[ \t]*[\"']?\Z")


def _joined(text: str, i: int, step: int) -> bool:
    """Whether ``text[i]``, next to a match, makes that match part of a longer token."""
    if not 0 <= i < len(text):
        return False
    ch = text[i]
    if ch.isalnum() or ch in _WORD_EXTRA:
        return True
    beyond = i + step
    return ch in _JOINERS and 0 <= beyond < len(text) and text[beyond].isalnum()


def _values(secrets: Iterable[Secret | str | None]) -> list[str]:
    """Distinct secret values, longest first (a secret that holds another is replaced whole)."""
    return sorted({s.reveal() if isinstance(s, Secret) else s for s in secrets if s}, key=len, reverse=True)


def mask(text: str, secrets: Iterable[Secret | str | None]) -> str:
    """Text from another program (a tool's output, a console) with the secrets replaced by ``***``.

    Only a whole token equal to a secret is replaced: never a part of a word,
    so masking tells nothing about the secret.  A secret of at least
    :data:`MIN_MASKED` characters is replaced wherever it stands as a token;
    a shorter one only right after a key that names a secret
    (``password=``, ``secret:``, ``password ``).  Text that the project
    builds itself never relies on this: it is built from fields, with the
    secret fields shown as :data:`MASK` (:meth:`Secret.shown`).
    """
    for value in _values(secrets):
        out: list[str] = []
        start = 0
        at = text.find(value)
        while at >= 0:
            end = at + len(value)
            whole = not _joined(text, at - 1, -1) and not _joined(text, end, 1)
            if whole and (len(value) >= MIN_MASKED or _SECRET_KEY.search(text, max(0, at - 40), at)):
                out += [text[start:at], MASK]
                start = end
                at = text.find(value, end)
            else:
                at = text.find(value, at + 1)
        text = "".join(out) + text[start:]
    return text


def mask_argv(argv: Iterable[str], secrets: Iterable[Secret | str | None]) -> list[str]:
    """A command's arguments for a message: an argument equal to a secret is the mask, whatever its length."""
    values = set(_values(secrets))
    return [MASK if arg in values else mask(arg, values) for arg in argv]
