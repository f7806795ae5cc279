# ruff: noqa: PLC0415  (imports are lazy on purpose: each phase loads only what it needs at boot)
"""iSCSI login through a backend: native (the default, :mod:`iscsiboot.agent.phases.native`:
the agent hands the session to the kernel over NETLINK_ISCSI) or open-iscsi's ``iscsistart``.

:func:`parse_iscsistart` turns the tool's output into a cause (pure, tested
with text captured from real runs).  :func:`login_all` logs in once per
distinct target and retries retryable failures with exponential backoff and
jitter until the deadline; an authentication failure is never retried.
"""

from __future__ import annotations

import enum
import random
import re
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from iscsiboot.agent.deadline import Deadline
from iscsiboot.agent.errors import PhaseError
from iscsiboot.agent.plan import backoff
from iscsiboot.errors import CommandError, EnvironmentProblem
from iscsiboot.model import Target, address_kind
from iscsiboot.secret import Secret, mask


class Cause(enum.Enum):
    OK = "ok"
    SESSION_EXISTS = "session-exists"
    AUTH = "auth"
    NOT_FOUND = "target-not-found"
    REJECTED = "login-rejected"
    REFUSED = "refused"
    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"
    NO_DRIVER = "no-iscsi-driver"
    NO_CRC32C = "no-crc32c"
    NO_FIRMWARE = "no-ibft"
    OTHER = "other"


RETRYABLE = frozenset({Cause.REFUSED, Cause.TIMEOUT, Cause.UNREACHABLE, Cause.OTHER})

# What each failure means, in the words of the one-line error.
MEANING: dict[Cause, str] = {
    Cause.AUTH: "CHAP authentication failed",
    Cause.NOT_FOUND: "the target does not know this target name or refuses this initiator",
    Cause.REJECTED: "the target rejected the login",
    Cause.REFUSED: "the portal refused the connection",
    Cause.TIMEOUT: "the target did not answer in time",
    Cause.UNREACHABLE: "the portal is unreachable",
    Cause.NO_DRIVER: "the kernel has no iSCSI transport (iscsi_tcp)",
    Cause.NO_CRC32C: "the kernel lacks the crc32c algorithm that iscsi_tcp needs",
    Cause.NO_FIRMWARE: "there is no iBFT to log in from",
    Cause.OTHER: "the login failed",
}


@dataclass(frozen=True)
class LoginResult:
    cause: Cause
    evidence: str  # the telling line of output, secrets masked
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.cause in (Cause.OK, Cause.SESSION_EXISTS)

    @property
    def retryable(self) -> bool:
        return self.cause in RETRYABLE


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


def fix_for(cause: Cause, target: Target | None) -> str:
    portal = target.portal if target else "the portal"
    name = target.name if target else "the target"
    return {
        Cause.AUTH: (
            "CHAP rejected by the target: check iscsi_username/iscsi_password (and iscsi_in_username/"
            "iscsi_in_password for mutual CHAP) or the target's CHAP account"
        ),
        Cause.NOT_FOUND: (
            f"{portal} has no target named {name}: check iscsi_target_name "
            f"(iscsiboot discover {portal} lists the names)"
        ),
        Cause.REJECTED: f"the target refused the login of {name}: "
        "check its ACL (initiator name) and LUN mapping",
        Cause.REFUSED: f"nothing accepts iSCSI connections at {portal}: "
        "check iscsi_target_ip/iscsi_target_port "
        "and that the target service runs",
        Cause.TIMEOUT: f"no answer from {portal}: check the address, gateway, VLAN and firewalls",
        Cause.UNREACHABLE: f"no route to {portal}: check the network address, gateway and VLAN",
        Cause.NO_DRIVER: "the iscsi_tcp kernel module is not loaded: add it to the initramfs",
        Cause.NO_CRC32C: "the kernel lacks the crc32c algorithm: add crc32c_generic (or crc32c-intel) "
        "to the initramfs",
        Cause.NO_FIRMWARE: "no iBFT was found: boot through iPXE sanboot or an iSCSI-capable NIC, "
        "or give the targets on the command line instead of auto",
        Cause.OTHER: "run with debugging to see the iscsistart output",
    }.get(cause, "see the evidence")


class LoginBackend(Protocol):
    """One way to log in; ``login`` never raises for a login failure, it returns its cause."""

    name: str

    def login(self, target: Target, initiator: str, deadline: Deadline) -> LoginResult: ...

    def login_firmware(self, deadline: Deadline) -> LoginResult: ...


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
                address = str(socket.getaddrinfo(address, target.port, type=socket.SOCK_STREAM)[0][4][0])
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


def _retry(
    attempt: Callable[[], LoginResult],
    what: str,
    target: Target | None,
    deadline: Deadline,
    *,
    sleep: Callable[[float], None],
    say: Callable[[str], None],
    rng: random.Random | None,
) -> LoginResult:
    delays = backoff(rng=rng)
    tries = 0
    while True:
        tries += 1
        result = attempt()
        if result.ok:
            return LoginResult(result.cause, result.evidence, tries)
        if not result.retryable or deadline.expired():
            break
        delay = min(next(delays), deadline.remaining())
        say(
            f"login to {what} failed ({result.cause.value}); retry {tries + 1} in {delay:.1f} s "
            f"({deadline.elapsed():.0f} s of {deadline.seconds:.0f})"
        )
        sleep(delay)
        if deadline.expired():
            break
    cause = result.cause
    detail = f"after {tries} attempt{'s' if tries > 1 else ''}" if tries > 1 else "at the first attempt"
    raise PhaseError(
        "login",
        f"cannot log in to {what}: {MEANING.get(cause, cause.value)} ({cause.value}, {detail})",
        cause=cause.value,
        evidence=result.evidence,
        fix=fix_for(cause, target),
        retryable=result.retryable,
    )


def login_all(
    backend: LoginBackend,
    targets: Iterable[Target],
    initiator: str | None,
    deadline: Deadline,
    *,
    firmware: bool = False,
    sleep: Callable[[float], None] = time.sleep,
    say: Callable[[str], None] = lambda _text: None,
    rng: random.Random | None = None,
) -> list[tuple[Target | None, LoginResult]]:
    """Log in to each target once (or to the iBFT's targets); raise PhaseError on failure."""
    done: list[tuple[Target | None, LoginResult]] = []
    wanted = list(targets)
    if firmware and not wanted:
        result = _retry(
            lambda: backend.login_firmware(deadline), "the iBFT targets", None, deadline,
            sleep=sleep, say=say, rng=rng,
        )  # fmt: skip
        return [(None, result)]
    if not wanted:
        raise PhaseError(
            "login",
            "no iSCSI target to log in to",
            cause="config",
            fix="give boot=ISCSI=auto,... or iscsi_target_name/iscsi_target_ip",
        )
    if initiator is None:
        raise PhaseError(
            "login",
            "no initiator name",
            cause="config",
            fix="give iscsi_initiator=iqn.... on the command line "
            "(or boot through iPXE, which sets it in the iBFT)",
        )
    for target in wanted:
        result = _retry(
            lambda t=target: backend.login(t, initiator, deadline),  # type: ignore[misc]
            f"{target.name} at {target.portal}", target, deadline, sleep=sleep, say=say, rng=rng,
        )  # fmt: skip
        done.append((target, result))
    return done


def make_backend(name: str, log: Callable[[str], None] = lambda _text: None) -> LoginBackend:
    """The backend called ``name``: ``native`` (the default) or ``iscsistart``."""
    if name == "iscsistart":
        from iscsiboot.proc import which

        try:
            program = which("iscsistart", hint="add open-iscsi's iscsistart to the initramfs")
        except EnvironmentProblem as exc:
            raise PhaseError("login", exc.what, cause="missing-tool", fix=exc.fix) from None
        return IscsistartBackend(program, log=log)
    if name == "native":
        from iscsiboot.agent.phases.native import NativeBackend

        return NativeBackend(log)
    raise PhaseError(
        "login", f"unknown login backend {name!r}", cause="config", fix="use native or iscsistart"
    )
