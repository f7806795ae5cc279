"""Login phase: iscsistart output into causes, retries with backoff, secrets kept out."""

from __future__ import annotations

import random
import shutil
import subprocess

import pytest
from iscsiboot.agent.backends.iscsistart import IscsistartBackend, parse_iscsistart
from iscsiboot.agent.backends.result import Cause, LoginResult
from iscsiboot.agent.deadline import Deadline
from iscsiboot.agent.errors import PhaseError
from iscsiboot.agent.phases.login import login_all
from iscsiboot.model import Chap, Target
from iscsiboot.secret import Secret, mask

PASSWORD = "s3cretPassw0rd!"
REVERSE = "an0therSecret##"
T = Target(
    "iqn.2024-01.test:t0",
    "10.0.2.2",
    chap=Chap("user", Secret(PASSWORD)),
    reverse_chap=Chap("target", Secret(REVERSE)),
)
INIT = "iqn.2024-01.test:init"

# Captured from real iscsistart runs (open-iscsi 2.1.8): on this host without the
# kernel's iSCSI modules, and in the QEMU guest against tgtd.
NO_NETLINK = """iscsistart: can not create NETLINK_ISCSI socket [Protocol not supported]
iscsistart: can not connect to iSCSI daemon (111)!
iscsistart: initiator reported error (20 - could not connect to iscsid)
iscsistart: Could not stop event_loop
iscsistart: Logging into iqn.2024-01.test:t 127.0.0.1:3260,1
"""
NO_IBFT = "Could not get boot entry.\n"
# the QEMU guest (Debian 6.1 kernel) against tgtd with a wrong CHAP password; exit status 1
AUTH = """iscsistart: Logging into iqn.2026-11.org.iscsiboot:htpc 10.0.2.2:52825,1
iscsistart: version 2.1.8
iscsistart: Login failed to authenticate with target iqn.2026-11.org.iscsiboot:htpc
iscsistart: session 1 login rejected: Initiator failed authentication with target
iscsistart: Connection1:0 to [target: iqn.2026-11.org.iscsiboot:htpc, portal: 10.0.2.2,52825] through \
[iface: default] is shutdown.
iscsistart: initiator reported error (24 - iSCSI login failed due to authorization failure)
"""
NOT_FOUND = """iscsistart: Logging into iqn.2024-01.test:nope 10.0.2.2:3260,1
iscsistart: conn 0 login rejected: initiator error - target not found (02/03)
iscsistart: initiator reported error (19 - encountered non-retryable iSCSI login failure)
"""
REFUSED = """iscsistart: Logging into iqn.2024-01.test:t0 10.0.2.2:3260,1
iscsistart: cannot make a connection to 10.0.2.2:3260 (-1,111)
iscsistart: connect to 10.0.2.2:3260 failed (Connection refused)
iscsistart: initiator reported error (8 - connection timed out)
"""
TIMEOUT = """iscsistart: Logging into iqn.2024-01.test:t0 10.0.2.9:3260,1
iscsistart: connect to 10.0.2.9:3260 failed (No route to host)
iscsistart: initiator reported error (8 - connection timed out)
"""
NO_CRC = """iscsistart: Logging into iqn.2024-01.test:t0 10.0.2.2:3260,1
iscsistart: Received iferror -12: Cannot allocate memory.
iscsistart: can't create connection (-12)
iscsistart: Can't create connection
"""
EXISTS = "iscsistart: initiator reported error (15 - session exists)\n"
OK = (
    "iscsistart: Logging into iqn.2024-01.test:t0 10.0.2.2:3260,1\n"
    "iscsistart: Connection1:0 to [target: iqn.2024-01.test:t0, portal: 10.0.2.2,3260] "
    "through [iface: default] is operational now\n"
)


@pytest.mark.parametrize(
    ("text", "code", "cause", "retryable"),
    [
        (NO_NETLINK, 1, Cause.NO_DRIVER, False),
        (NO_IBFT, 21, Cause.NO_FIRMWARE, False),
        (AUTH, 1, Cause.AUTH, False),
        (NOT_FOUND, 19, Cause.NOT_FOUND, False),
        (REFUSED, 8, Cause.REFUSED, True),
        (TIMEOUT, 8, Cause.UNREACHABLE, True),
        (NO_CRC, 1, Cause.NO_CRC32C, False),
        (EXISTS, 15, Cause.SESSION_EXISTS, False),
        (OK, 0, Cause.OK, False),
        ("iscsistart: something odd\n", 3, Cause.OTHER, True),
        ("", None, Cause.TIMEOUT, True),
    ],
)
def test_parse_iscsistart(text: str, code: int | None, cause: Cause, retryable: bool) -> None:
    result = parse_iscsistart(text, code)
    assert result.cause is cause
    assert result.retryable is retryable
    assert result.ok is (cause in (Cause.OK, Cause.SESSION_EXISTS))
    assert result.evidence


def test_parse_picks_the_telling_line() -> None:
    assert "authorization" in parse_iscsistart(AUTH, 24).evidence
    assert "(02/03)" in parse_iscsistart(NOT_FOUND, 19).evidence


def test_argv_is_a_list_with_the_documented_options() -> None:
    argv = IscsistartBackend.argv("iscsistart", T, INIT)
    assert argv[:11] == [
        "iscsistart", "-i", INIT, "-t", T.name, "-g", "1", "-a", "10.0.2.2", "-p", "3260",
    ]  # fmt: skip
    assert argv[11:] == ["-u", "user", "-w", PASSWORD, "-U", "target", "-W", REVERSE]
    plain = IscsistartBackend.argv("iscsistart", Target("iqn.x:y", "10.0.0.1", port=3261, group=2), INIT)
    assert "-u" not in plain and plain[plain.index("-g") + 1] == "2" and plain[-1] == "3261"


class Fake:
    """A backend that replays results, on a fake clock."""

    name = "fake"

    def __init__(self, results: list[LoginResult], clock: list[float]) -> None:
        self.results = results
        self.calls = 0
        self.clock = clock

    def login(self, target: Target, initiator: str, deadline: Deadline) -> LoginResult:
        self.calls += 1
        self.clock[0] += 0.2
        return self.results[min(self.calls - 1, len(self.results) - 1)]

    def login_firmware(self, deadline: Deadline) -> LoginResult:
        return self.login(T, INIT, deadline)


def _run(results: list[LoginResult], seconds: float = 30.0, targets: tuple[Target, ...] = (T,)):  # type: ignore[no-untyped-def]
    clock = [0.0]
    backend = Fake(results, clock)
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        clock[0] += s

    said: list[str] = []
    deadline = Deadline(seconds, lambda: clock[0])
    try:
        out = login_all(backend, targets, INIT, deadline, sleep=sleep, say=said.append, rng=random.Random(3))
    except PhaseError as exc:
        return backend, slept, said, exc
    return backend, slept, said, out


def test_auth_failure_is_never_retried() -> None:
    backend, slept, _said, exc = _run([parse_iscsistart(AUTH, 24)])
    assert isinstance(exc, PhaseError)
    assert backend.calls == 1 and slept == []
    assert exc.cause == "auth" and exc.phase == "login"
    assert "authentication failed" in exc.what
    assert "iscsi_username/iscsi_password" in (exc.fix or "")
    assert PASSWORD not in str(exc) and PASSWORD not in exc.paragraph()


def test_refused_is_retried_with_growing_delays_then_succeeds() -> None:
    refused = parse_iscsistart(REFUSED, 8)
    backend, slept, said, out = _run([refused, refused, refused, parse_iscsistart(OK, 0)])
    assert isinstance(out, list) and out[0][1].ok and out[0][1].attempts == 4
    assert backend.calls == 4 and len(slept) == 3
    assert slept[2] > slept[0]
    assert said and "retry 2" in said[0]


def test_retry_stops_at_the_deadline() -> None:
    backend, slept, _said, exc = _run([parse_iscsistart(REFUSED, 8)], seconds=10.0)
    assert isinstance(exc, PhaseError) and exc.cause == "refused"
    assert sum(slept) <= 10.0 and backend.calls >= 4
    assert "attempts" in exc.what and exc.retryable


def test_session_exists_counts_as_success() -> None:
    _b, _s, _said, out = _run([parse_iscsistart(EXISTS, 15)])
    assert isinstance(out, list) and out[0][1].cause is Cause.SESSION_EXISTS


def test_one_login_per_target_list_and_missing_initiator() -> None:
    backend, _s, _said, out = _run([parse_iscsistart(OK, 0)], targets=(T, Target("iqn.x:second", "10.0.2.2")))
    assert isinstance(out, list) and backend.calls == 2
    clock = [0.0]
    with pytest.raises(PhaseError, match="initiator"):
        login_all(Fake([], clock), (T,), None, Deadline(5, lambda: clock[0]))
    with pytest.raises(PhaseError, match="no iSCSI target"):
        login_all(Fake([], clock), (), INIT, Deadline(5, lambda: clock[0]))


def test_backend_masks_secrets_from_tool_output() -> None:
    seen: list[list[str]] = []

    def runner(argv: list[str], secrets: list[Secret], timeout: float) -> tuple[int | None, str]:
        seen.append(argv)
        return 24, mask(f"iscsistart: bad password {PASSWORD}\n" + AUTH, secrets)

    logged: list[str] = []
    backend = IscsistartBackend("iscsistart", runner, log=logged.append)
    result = backend.login(T, INIT, Deadline(5))
    assert any("authorization failure" in line for line in logged) and logged[-1].endswith("24")
    assert all(PASSWORD not in line for line in logged)
    assert result.cause is Cause.AUTH
    assert PASSWORD in seen[0]  # the tool gets it ...
    assert all(PASSWORD not in text for text in backend.transcript)  # ... the transcript does not


@pytest.mark.skipif(shutil.which("iscsistart") is None, reason="open-iscsi is not installed")
def test_real_iscsistart_output_is_understood() -> None:
    """Run the real tool; without the kernel's iSCSI support it stops at NETLINK_ISCSI."""
    backend = IscsistartBackend(shutil.which("iscsistart") or "iscsistart")
    result = backend.login(Target("iqn.2024-01.test:none", "127.0.0.1", port=9), INIT, Deadline(4))
    transport = subprocess.run(["ls", "/sys/class/iscsi_transport"], capture_output=True, check=False)
    if transport.returncode != 0:
        assert result.cause is Cause.NO_DRIVER, backend.transcript
    else:
        assert result.cause in (Cause.REFUSED, Cause.TIMEOUT, Cause.OTHER), backend.transcript
    firmware = backend.login_firmware(Deadline(20))
    assert not firmware.ok
