# ruff: noqa: PLC0415  (imports are lazy on purpose: each phase loads only what it needs at boot)
"""The ``iscsistart`` login backend: open-iscsi's tool logs in, its output says why it failed.

:func:`parse_iscsistart` turns the tool's output into a cause (pure, tested
with text captured from real runs).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable

from iscsiboot.agent.backends.result import Cause, LoginResult
from iscsiboot.agent.deadline import Deadline
from iscsiboot.errors import CommandError
from iscsiboot.model import Target, address_kind
from iscsiboot.secret import Secret, mask

# (cause, pattern) in order of precedence: the first that matches a line wins.
_RULES: tuple[tuple[Cause, re.Pattern[str]], ...] = tuple(
    (cause, re.compile(pattern, re.IGNORECASE))
    for cause, pattern in (
        (Cause.SESSION_EXISTS, r"\(15 - |session exists|already (present|exists)"),
        (Cause.NO_DRIVER, r"NETLINK_ISCSI|\(12 - |transport module not loaded|driver not found"),
        (Cause.NO_CRC32C, r"iferror -12|Can't create connection"),
        (
            Cause.AUTH,
            r"\(24 - |authori[sz]ation failure|authentication fail|failed authori[sz]ation|auth.*fail",
        ),
        (Cause.NOT_FOUND, r"target not found|\(02/03\)|not found \(0?2/0?3\)"),
        (Cause.NO_FIRMWARE, r"Could not get boot entry|No boot entr|could not read iBFT|no iBFT"),
        (Cause.REFUSED, r"Connection refused|\(-?\d+,\s*111\)|\(4 - encountered connection failure\)"),
        (Cause.UNREACHABLE, r"No route to host|Network is unreachable|\(-?\d+,\s*11[03]\)"),
        (Cause.TIMEOUT, r"timed out|\(8 - |\(11 - "),
        (Cause.REJECTED, r"\(19 - |non-retryable|login rejected"),
    )
)


def parse_iscsistart(output: str, returncode: int | None) -> LoginResult:
    """The cause of an ``iscsistart`` run from its combined output and exit code."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for cause, pattern in _RULES:
        for line in lines:
            if pattern.search(line) and (cause is Cause.SESSION_EXISTS or returncode != 0):
                return LoginResult(cause, line)
    if returncode == 0:
        good = [line for line in lines if "operational" in line or "successful" in line.lower()]
        return LoginResult(Cause.OK, good[-1] if good else "iscsistart exited 0")
    if returncode is None:
        return LoginResult(Cause.TIMEOUT, lines[-1] if lines else "iscsistart did not finish")
    errors = [line for line in lines if "error" in line.lower()]
    tail = errors[-1] if errors else (lines[-1] if lines else "no output")
    return LoginResult(Cause.OTHER, f"iscsistart exited {returncode}: {tail}")


Runner = Callable[[list[str], list[Secret], float], tuple[int | None, str]]


def _run_tool(argv: list[str], secrets: list[Secret], timeout: float) -> tuple[int | None, str]:
    from iscsiboot.proc import run

    try:
        done = run(argv, what="log in to the iSCSI target", secrets=secrets, check=False, timeout=timeout)
    except CommandError as exc:  # timed out
        return None, mask(exc.stderr, secrets)
    return done.returncode, mask(done.stdout + "\n" + done.stderr, secrets)


class IscsistartBackend:
    name = "iscsistart"

    def __init__(
        self,
        program: str = "iscsistart",
        runner: Runner = _run_tool,
        log: Callable[[str], None] = lambda _text: None,
    ) -> None:
        self.program = program
        self.runner = runner
        self.log = log  # receives each run's output (secrets already masked)
        self.transcript: list[str] = []

    @staticmethod
    def argv(program: str, target: Target, initiator: str, address: str | None = None) -> list[str]:
        args = [
            program,
            "-i", initiator,
            "-t", target.name,
            "-g", str(target.group),
            "-a", address or target.address,
            "-p", str(target.port),
        ]  # fmt: skip
        if target.chap is not None:
            args += ["-u", target.chap.username, "-w", target.chap.password.reveal()]
        if target.reverse_chap is not None:
            args += ["-U", target.reverse_chap.username, "-W", target.reverse_chap.password.reveal()]
        return args

    def login(self, target: Target, initiator: str, deadline: Deadline) -> LoginResult:
        address = target.address
        if address_kind(address) == "hostname":
            try:
                from iscsiboot.iscsi.transport import host_arg

                found = socket.getaddrinfo(host_arg(address), target.port, type=socket.SOCK_STREAM)
                address = str(found[0][4][0])
            except OSError as exc:
                return LoginResult(Cause.UNREACHABLE, f"cannot resolve {target.address}: {exc}")
        argv = self.argv(self.program, target, initiator, address)
        code, output = self.runner(argv, list(target.secrets()), max(1.0, deadline.remaining()))
        return self._done(code, output)

    def _done(self, code: int | None, output: str) -> LoginResult:
        self.transcript.append(output)
        for line in output.splitlines():
            if line.strip():
                self.log(f"iscsistart: {line.strip().removeprefix('iscsistart: ')}")
        self.log(f"iscsistart exit status: {'timeout' if code is None else code}")
        return parse_iscsistart(output, code)

    def login_firmware(self, deadline: Deadline) -> LoginResult:
        code, output = self.runner([self.program, "-b"], [], max(1.0, deadline.remaining()))
        return self._done(code, output)
