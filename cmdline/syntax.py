"""What a value may hold to be written into a line-based file that another program reads.

extlinux.conf, kernel command lines and dnsmasq configurations are read line by
line; a value that carries a line break adds lines of its own (an extra
``KERNEL`` or ``APPEND``, a ``dhcp-option``).  Python and the readers disagree on
what breaks a line (``\\r``, ``\\f``, ``\\v``, U+0085, U+2028 and U+2029 all do for
:meth:`str.splitlines`), so every control character (Unicode category Cc, NUL
included), line or paragraph separator (Zl, Zp) and lone surrogate (Cs: not
writable as UTF-8) is refused, never escaped: none of these formats has an
escape for them.

The generators call these checks on each value with the option (or JSON field)
it came from, so that the one-line error names it; a secret's character is never
shown.
"""

from __future__ import annotations

import unicodedata

from iscsiboot.errors import RepresentError

__all__ = ["bad_char", "check_dnsmasq", "check_text"]

_REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
# dnsmasq reads '#' as a comment, '"' and '\' as quoting, ',' as a field separator and
# white space as the end of a value (dnsmasq's option.c); none can be escaped in an
# unquoted value.
_DNSMASQ_SPECIAL = frozenset('#"\\,')


def bad_char(text: str) -> str | None:
    """The first control, line-separator or surrogate character of ``text``, or None."""
    for char in text:
        if unicodedata.category(char) in _REFUSED_CATEGORIES:
            return char
    return None


def _describe(char: str) -> str:
    return f"U+{ord(char):04X}"


def check_text(value: str, what: str, *, secret: bool = False) -> str:
    """``value`` when it has no control or line-separator character; else RepresentError.

    ``what`` names the value and its option (``"system locator (--system)"``).
    For a ``secret`` the message does not show the character.
    """
    char = bad_char(value)
    if char is not None:
        shown = "" if secret else f" ({_describe(char)})"
        raise RepresentError(
            f"the {what} has a control or line-separator character{shown}: "
            "it would break the generated file's lines",
            fix="remove it",
        )
    return value


def check_dnsmasq(value: str, what: str, *, commas: bool = False) -> str:
    """A value dnsmasq reads back unchanged on an unquoted configuration line.

    Refused: empty, control characters, white space, ``#``, ``"``, ``\\`` and
    (unless ``commas``: the value is itself a comma-separated list) ``,``.
    """
    check_text(value, what)
    special = _DNSMASQ_SPECIAL - {","} if commas else _DNSMASQ_SPECIAL
    if not value or any(c.isspace() or c in special for c in value):
        chars = "white space, '#', '\"', '\\'" + ("" if commas else " or ','")
        raise RepresentError(
            f"the {what} {value!r} is empty or has {chars}, which dnsmasq reads as syntax",
            fix="choose a value without them",
        )
    return value
