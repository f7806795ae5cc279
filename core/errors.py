"""The one error hierarchy of iscsiboot.

Every error a user can meet is an :class:`IscsibootError`.  It renders as one
line: what failed, where, and what to do.  The CLI prints that line and exits
with :attr:`IscsibootError.exit_code`; a traceback appears only with
``--debug``.  Messages never contain secrets: they are built from fields,
and a field that holds a secret (or text that may hold one, such as an
input token that failed to parse) is shown redacted, never searched for the
secret's text.  Only text from another program (a tool's stderr) goes
through :func:`iscsiboot.secret.mask`.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class IscsibootError(Exception):
    """Base class.  ``what`` failed, ``where`` (a token, a field, a path), ``fix``."""

    exit_code: int = EXIT_FAILURE

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None) -> None:
        super().__init__(what)
        self.what = what
        self.where = where
        self.fix = fix

    def __str__(self) -> str:
        text = self.what
        if self.where:
            text = f"{self.where}: {text}"
        if self.fix:
            text = f"{text} ({self.fix})"
        return text


class UsageError(IscsibootError):
    """Bad options or input given by the user."""

    exit_code = EXIT_USAGE


class ParseError(UsageError):
    """Text (a kernel command line, a JSON model, a configuration) that does not parse."""


class RepresentError(UsageError):
    """A model that the requested output format cannot express."""


class TableError(UsageError):
    """An iBFT that is unreadable or invalid; ``where`` names the field and offset."""


class CommandError(IscsibootError):
    """A subprocess failed.  The message names the command, its exit code and stderr."""

    def __init__(
        self,
        what: str,
        *,
        argv: list[str],
        returncode: int | None,
        stderr: str = "",
        fix: str | None = None,
    ) -> None:
        super().__init__(what, where=argv[0] if argv else None, fix=fix)
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr

    def __str__(self) -> str:
        tail = self.stderr.strip().splitlines()
        detail = f"{' '.join(self.argv)} exited {self.returncode}"
        if tail:
            detail += f": {tail[-1].strip()}"
        text = f"{self.what}: {detail}"
        if self.fix:
            text = f"{text} ({self.fix})"
        return text


class EnvironmentProblem(IscsibootError):
    """Something missing on the machine (a program, a privilege, a kernel feature)."""


class BootFailure(IscsibootError):
    """A boot (or a boot scenario) did not reach its goal."""
