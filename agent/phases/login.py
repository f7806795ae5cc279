# ruff: noqa: PLC0415  (imports are lazy on purpose: each phase loads only what it needs at boot)
"""Phase login: log in to each target once through a backend (:mod:`iscsiboot.agent.backends`).

The backend is native (the default, :mod:`iscsiboot.agent.backends.kernel`: the
agent hands the session to the kernel over NETLINK_ISCSI) or open-iscsi's
``iscsistart`` (:mod:`iscsiboot.agent.backends.iscsistart`); with the NBD
transport it is :mod:`iscsiboot.agent.backends.nbd`.  :func:`login_all`
logs in once per distinct target and retries retryable failures with
exponential backoff and jitter until the deadline; an authentication failure
is never retried.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from iscsiboot.agent.backends.result import MEANING, Cause, LoginBackend, LoginResult
from iscsiboot.agent.deadline import Deadline
from iscsiboot.agent.errors import PhaseError
from iscsiboot.agent.plan import backoff
from iscsiboot.agent.transport import Transport
from iscsiboot.errors import EnvironmentProblem
from iscsiboot.model import Target

TYPE_CHECKING = False
if TYPE_CHECKING:
    import random


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
        Cause.NO_NBD: "load the kernel's nbd module (CONFIG_BLK_DEV_NBD), or boot a kernel with "
        "iSCSI and an image built with --transport kernel",
        Cause.UNUSABLE_LUN: "map a disk LUN with 512- or 4096-byte blocks and a size above zero "
        "(the evidence says what the target reported)",
        Cause.OTHER: "run with debugging to see the backend's output",
    }.get(cause, "see the evidence")


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


def make_backend(
    name: str,
    log: Callable[[str], None] = lambda _text: None,
    *,
    transport: Transport = Transport.KERNEL,
    recovery_timeout: int = 120,
    ping: int = 0,
) -> LoginBackend:
    """The backend called ``name`` (``native``, the default, or ``iscsistart``) for ``transport``.

    ``recovery_timeout`` and ``ping`` (NOP-Out interval, 0: none) go to the native backend's
    kernel sessions.

    The NBD transport has one backend, the project's own initiator in user space
    (:mod:`iscsiboot.agent.backends.nbd`); ``iscsistart`` needs kernel iSCSI.
    """
    if transport is Transport.NBD:
        if name == "iscsistart":
            raise PhaseError(
                "login",
                "iscsistart needs kernel iSCSI, but the transport is nbd",
                cause="config",
                fix="drop iscsiboot.backend=iscsistart, or boot with iscsiboot.transport=kernel "
                "on a kernel with iSCSI",
            )
        from iscsiboot.agent.backends.nbd import NbdBackend

        return NbdBackend(log)
    if name == "iscsistart":
        from iscsiboot.proc import which

        try:
            program = which("iscsistart", hint="add open-iscsi's iscsistart to the initramfs")
        except EnvironmentProblem as exc:
            raise PhaseError("login", exc.what, cause="missing-tool", fix=exc.fix) from None
        from iscsiboot.agent.backends.iscsistart import IscsistartBackend

        return IscsistartBackend(program, log=log)
    if name == "native":
        from iscsiboot.agent.backends.kernel import NativeBackend

        return NativeBackend(log, recovery_timeout=recovery_timeout, ping=ping)
    raise PhaseError(
        "login", f"unknown login backend {name!r}", cause="config", fix="use native or iscsistart"
    )
