"""Read an iPXE script the way iPXE does, and the rule for a word written into one.

iPXE's script reader and shell (``src/image/script.c``, ``src/core/exec.c``):

* Lines end at ``\\n``; one trailing ``\\r`` is dropped; a line that then ends in
  ``\\`` continues on the next one (the backslash goes, nothing is inserted).
  A NUL ends the line (iPXE works on C strings).
* After leading white space, ``:name`` is a label; the rest of the line is the
  command.
* Words are split at ASCII white space (space, ``\\t``, ``\\n``, ``\\v``, ``\\f``,
  ``\\r``).  There is no quoting and no escape character.
* A word that starts with ``#`` starts a comment: it and every word after it on
  the line are dropped.  The words ``||``, ``&&`` and ``;`` end a command.
* ``${name}`` inside a word is replaced by the setting's value when the command
  runs (innermost first, again and again while the result holds one).

So a value written as one word must have no white space, must not start with
``#``, must not be ``||``, ``&&`` or ``;``, must not hold ``${`` and, at the end
of a line, must not end in ``\\``.  iPXE's syntax has no way to quote any of
these: :func:`check_word` refuses them.  Quotes and a ``$`` not followed by
``{`` are ordinary characters and pass.

:func:`read_script` returns every command with its words as written (not
expanded), its label and the words a comment dropped; :func:`expands` says
whether a word would be expanded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from iscsiboot.errors import ParseError, RepresentError

__all__ = ["Command", "Script", "ScriptLine", "check_word", "expands", "read_script"]

MAGICS = ("#!ipxe", "#!gpxe")
TERMINATORS = ("||", "&&", ";")
_SPACE = " \t\n\v\f\r"
_EXPANSION = re.compile(r"\$\{.*?\}", re.DOTALL)


@dataclass(frozen=True)
class Command:
    """One command: its words (not expanded) and the terminator that ends it (None: the line's end)."""

    words: tuple[str, ...]
    terminator: str | None = None


@dataclass(frozen=True)
class ScriptLine:
    """One logical line: its first physical line number (1-based), label, commands and comment words."""

    number: int
    label: str | None
    commands: tuple[Command, ...]
    comment: tuple[str, ...] = ()


@dataclass(frozen=True)
class Script:
    lines: tuple[ScriptLine, ...]
    #: a continuation (a last line ending in ``\\``) that iPXE never runs
    dangling: bool = False

    def commands(self) -> tuple[Command, ...]:
        return tuple(c for line in self.lines for c in line.commands if c.words)

    def labels(self) -> tuple[str, ...]:
        return tuple(line.label for line in self.lines if line.label is not None)


def expands(word: str) -> bool:
    """Whether iPXE replaces part of ``word`` by a setting's value (``${...}``)."""
    return _EXPANSION.search(word) is not None


def _split_words(text: str) -> list[str]:
    words: list[str] = []
    current: list[str] = []
    for char in text:
        if char in _SPACE:
            if current:
                words.append("".join(current))
                current = []
        else:
            current.append(char)
    if current:
        words.append("".join(current))
    return words


def _commands(words: list[str]) -> tuple[tuple[Command, ...], tuple[str, ...]]:
    commands: list[Command] = []
    current: list[str] = []
    for i, word in enumerate(words):
        if word.startswith("#"):
            commands.append(Command(tuple(current)))
            return tuple(commands), tuple(words[i:])
        if word in TERMINATORS:
            commands.append(Command(tuple(current), word))
            current = []
        else:
            current.append(word)
    commands.append(Command(tuple(current)))
    return tuple(commands), ()


def _logical_line(number: int, text: str) -> ScriptLine:
    text = text.split("\0", 1)[0]
    command = text.lstrip(_SPACE)
    label: str | None = None
    if command.startswith(":"):
        rest = command[1:]
        end = next((i for i, c in enumerate(rest) if c in _SPACE), len(rest))
        label, command = rest[:end], rest[end + 1 :]
    commands, comment = _commands(_split_words(command))
    return ScriptLine(number, label, commands, comment)


def read_script(text: str) -> Script:
    """The lines of an iPXE script; ParseError when it lacks the ``#!ipxe`` signature."""
    if not (text[:6] in MAGICS and len(text) > 6 and text[6] in _SPACE):
        raise ParseError("not an iPXE script", fix="an iPXE script starts with '#!ipxe' and white space")
    lines: list[ScriptLine] = []
    physical = text.split("\n")
    if text.endswith("\n"):
        physical.pop()  # iPXE stops at the end of the data: no empty last line
    pending: list[str] = []
    start = 1
    for number, fragment in enumerate(physical, 1):
        if not pending:
            start = number
        pending.append(fragment)
        joined = "".join(pending)
        if joined.endswith("\r"):
            joined = joined[:-1]
        if joined.endswith("\\"):
            pending = [joined[:-1]]
            continue
        lines.append(_logical_line(start, joined))
        pending = []
    return Script(tuple(lines), dangling=bool(pending))


def check_word(value: str, what: str, *, secret: bool = False) -> str:
    """``value`` when iPXE reads it back as one unexpanded word, even at a line's end.

    Else RepresentError (iPXE has no quoting: the value cannot be written).
    The message never shows a ``secret``.
    """
    problem: str | None = None
    if not value or any(c in _SPACE or c == "\0" for c in value):
        problem = "is empty or has white space"
    elif value.startswith("#"):
        problem = "starts with '#', which iPXE reads as a comment"
    elif value in TERMINATORS:
        problem = f"is {'the word' if secret else repr(value)}, which ends an iPXE command"
    elif "${" in value:
        problem = "has '${', which iPXE expands as a setting"
    elif value.endswith("\\"):
        problem = "ends in '\\', which continues an iPXE line"
    if problem is not None:
        raise RepresentError(
            f"the {what} {problem} (iPXE scripts have no quoting)",
            fix="choose a value without it",
        )
    return value
