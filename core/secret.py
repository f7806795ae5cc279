"""Secrets (CHAP passwords) as a type of their own that never prints.

``str()``, ``repr()`` and ``format()`` of a :class:`Secret` give ``***``.  The
value is reached only through :meth:`Secret.reveal`, so every place that shows
a secret is explicit and easy to audit.
"""

from __future__ import annotations

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


def mask(text: str, secrets: Iterable[Secret | str | None]) -> str:
    """Replace every occurrence of each secret value in ``text`` with ``***``.

    Longer values are replaced first so that a secret which contains another
    one is masked whole.
    """
    values = sorted(
        {s.reveal() if isinstance(s, Secret) else s for s in secrets if s},
        key=len,
        reverse=True,
    )
    for value in values:
        if value:
            text = text.replace(value, MASK)
    return text
