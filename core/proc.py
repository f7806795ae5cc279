"""The one way iscsiboot runs other programs: argument lists, masked failures."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from iscsiboot.errors import CommandError, EnvironmentProblem
from iscsiboot.secret import Secret, mask, mask_argv


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


SYSTEM_PATH = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")  # searched after $PATH


def find(program: str) -> str | None:
    """The full path of ``program`` on ``$PATH`` or else in :data:`SYSTEM_PATH`; None if there is none.

    ``shutil.which``'s search, written out so that the boot agent does not import
    ``shutil`` (and its compressors) into PID 1 to find ``e2fsck`` or ``udhcpc``.
    """
    if os.sep in program:
        folders: list[str] = [""]
    else:
        folders = [d for d in os.environ.get("PATH", os.defpath).split(os.pathsep) if d]
        folders += [d for d in SYSTEM_PATH if d not in folders]
    for folder in folders:
        path = os.path.join(folder, program)
        if os.access(path, os.X_OK) and not os.path.isdir(path):
            return path
    return None


def which(program: str, *, hint: str | None = None) -> str:
    """The full path of ``program``, or an :class:`EnvironmentProblem` saying how to get it."""
    path = find(program)
    if path is None:
        raise EnvironmentProblem(
            f"program {program!r} not found",
            fix=hint or f"install the package that provides {program}",
        )
    return path


def _run(
    args: list[str],
    input_text: str | None,
    timeout: float | None,
    env: dict[str, str] | None,
    cwd: str | os.PathLike[str] | None,
) -> subprocess.CompletedProcess[str]:
    """``subprocess.run`` with captured text output, whose killed child is also waited for.

    On Ctrl-C or SIGTERM ``subprocess.run`` kills the child but returns without
    waiting for it; until it is gone it may still hold what the clean-up then undoes
    (a mount point is "busy", a loop device stays).
    """
    stdin = subprocess.PIPE if input_text is not None else None
    with subprocess.Popen(
        args, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd
    ) as proc:
        try:
            out, err = proc.communicate(input_text, timeout=timeout)
        except BaseException:  # a timeout too: its exception keeps the output read so far
            proc.kill()
            proc.wait()
            raise
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def run(
    argv: Sequence[str],
    *,
    what: str,
    secrets: Iterable[Secret | str | None] = (),
    check: bool = True,
    input_text: str | None = None,
    timeout: float | None = None,
    fix: str | None = None,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> Result:
    """Run ``argv`` (never through a shell) and capture its output.

    On failure raise :class:`CommandError` whose command line and stderr have
    every value of ``secrets`` masked.  ``what`` says in words what was being
    done ("format the System partition").
    """
    args = [str(a) for a in argv]
    hidden = list(secrets)
    try:
        done = _run(args, input_text, timeout, env, cwd)
    except FileNotFoundError:
        raise EnvironmentProblem(
            f"cannot {what}: program {args[0]!r} not found",
            fix=fix or f"install the package that provides {args[0]}",
        ) from None
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
        raise CommandError(
            f"cannot {what}: timed out after {timeout} s",
            argv=mask_argv(args, hidden),
            returncode=None,
            stderr=mask(stderr, hidden),
            fix=fix,
        ) from None
    result = Result(tuple(args), done.returncode, done.stdout, done.stderr)
    if check and done.returncode != 0:
        raise CommandError(
            f"cannot {what}",
            argv=mask_argv(args, hidden),
            returncode=done.returncode,
            stderr=mask(done.stderr or done.stdout, hidden),
            fix=fix,
        )
    return result
