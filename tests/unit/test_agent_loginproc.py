"""PID 1's login worker: the native backend's login phase in a child process."""

from __future__ import annotations

import os
import socket
import time

import pytest
from iscsiboot.agent.backends.kernel import NativeBackend
from iscsiboot.agent.backends.result import Cause, LoginResult
from iscsiboot.agent.deadline import Deadline
from iscsiboot.agent.errors import PhaseError
from iscsiboot.agent.phases import login
from iscsiboot.agent.startup.loginproc import LoginWorker
from iscsiboot.agent.startup.netproc import WorkerGone
from iscsiboot.model import Chap, Target
from iscsiboot.secret import Secret

INITIATOR = "iqn.2026-11.org.iscsiboot:client"


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _target(port: int) -> Target:
    chap = Chap("user", Secret("worker-secret-123"))
    return Target("iqn.2026-11.org.iscsiboot:disk", "127.0.0.1", port=port, chap=chap)


def _login(worker: LoginWorker, targets: list[Target], seconds: float, *, firmware: bool = False):  # type: ignore[no-untyped-def]
    said: list[str] = []
    debugged: list[str] = []
    done = worker.login(
        targets, INITIATOR, Deadline(seconds), firmware=firmware, recovery_timeout=120, ping=0,
        say=said.append, debug=debugged.append,
    )  # fmt: skip
    return done, said, debugged


def test_the_worker_fails_as_the_login_phase_in_pid1_does() -> None:
    target = _target(_closed_port())
    with pytest.raises(PhaseError) as here:  # the same login in this process
        login.login_all(NativeBackend(lambda _text: None), [target], INITIATOR, Deadline(1.5))
    worker = LoginWorker.start()
    with pytest.raises(PhaseError) as caught:
        _login(worker, [target], 1.5)
    err, expected = caught.value, here.value
    assert err.phase == "login"
    assert (err.cause, err.fix, err.retryable) == (expected.cause, expected.fix, expected.retryable)
    assert err.what.split(" (")[0] == expected.what.split(" (")[0]  # the number of attempts may differ
    assert "cannot log in to iqn.2026-11.org.iscsiboot:disk at 127.0.0.1:" in err.what
    assert "worker-secret-123" not in f"{err.what} {err.evidence} {err.fix}"
    assert worker.status is not None and os.waitstatus_to_exitcode(worker.status) == 0  # reaped
    assert worker.peak_rss_kib is not None and worker.peak_rss_kib > 1024
    shown = worker.timeline()
    steps = [shown.index(f"{step} +") for step in ("login imported", "request received", "login failed")]
    assert steps == sorted(steps)


def test_retries_come_through_as_progress_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def flaky(backend, targets, initiator, deadline, *, firmware=False, say=None, **_kw):  # type: ignore[no-untyped-def]
        calls.append(1)
        say("login to the target failed (timeout); retry 2 in 0.1 s (0 s of 9)")
        return [(t, LoginResult(Cause.OK, "logged in", 2)) for t in targets]

    monkeypatch.setattr(login, "login_all", flaky)  # before the fork: the worker uses it
    worker = LoginWorker.start()
    target = _target(3260)
    done, said, _debugged = _login(worker, [target], 10)
    logins, kept = done
    assert logins == [(target, LoginResult(Cause.OK, "logged in", 2))] and kept == []
    assert said == ["login to the target failed (timeout); retry 2 in 0.1 s (0 s of 9)"]
    assert calls == []  # it ran in the worker, not here


def test_the_ibfts_targets_map_to_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        login, "login_all", lambda *_a, **_k: [(None, LoginResult(Cause.SESSION_EXISTS, "kept", 1))]
    )
    worker = LoginWorker.start()
    (logins, kept), _said, _debugged = _login(worker, [], 10, firmware=True)
    assert logins == [(None, LoginResult(Cause.SESSION_EXISTS, "kept", 1))] and kept == []


def test_a_dead_worker_is_worker_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(login, "login_all", lambda *_a, **_k: os._exit(3))
    worker = LoginWorker.start()
    with pytest.raises(WorkerGone, match=r"exit status 3|cannot be reached"):
        _login(worker, [_target(3260)], 10)
    assert worker.status is not None and os.waitstatus_to_exitcode(worker.status) == 3
    assert not worker.running


def test_an_answer_for_other_targets_is_worker_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(login, "login_all", lambda *_a, **_k: [])
    worker = LoginWorker.start()
    with pytest.raises(WorkerGone, match="0 results for 1 targets"):
        _login(worker, [_target(3260)], 10)


def test_a_run_that_stops_before_the_login_ends_the_worker() -> None:
    worker = LoginWorker.start()
    assert worker.running
    started = time.monotonic()
    worker.stop()  # end of file on its pipe
    assert worker.status is not None and os.waitstatus_to_exitcode(worker.status) == 0
    assert time.monotonic() - started < 5 and not worker.running
    worker.stop()  # twice is harmless
    with pytest.raises(WorkerGone):
        _login(worker, [_target(3260)], 1)
