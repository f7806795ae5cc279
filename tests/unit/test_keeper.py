"""The session keeper: its recovery sequence against a fake kernel, its configuration, its start."""

from __future__ import annotations

import errno
import json
import socket
import struct
from pathlib import Path
from typing import Any

import pytest
from iscsiboot.agent.backends import kernel as native
from iscsiboot.agent.keeper import launch, recovery
from iscsiboot.agent.keeper.config import KeeperConfig, KeptSession, parse_timeout
from iscsiboot.agent.options import parse_options
from iscsiboot.agent.phases.login import make_backend
from iscsiboot.errors import ParseError
from iscsiboot.initramfs.pyruntime import transport_modules
from iscsiboot.iscsi import netlink as nl
from iscsiboot.iscsi.login import AuthenticationFailed, LoginResult
from iscsiboot.iscsi.text import Params
from iscsiboot.model import Chap, Target
from iscsiboot.secret import Secret

IQN = "iqn.2026-11.org.iscsiboot:htpc"
ME = "iqn.2026-11.org.iscsiboot:client"
ISID = bytes.fromhex("80123456789a")
TARGET = Target(IQN, "10.0.2.2", 3260, 1, 1, Chap("htpc", Secret("secret-secret-1")), None)
SESSION = KeptSession(3, 0, 2, TARGET, ME, ISID)


def conn_error(sid: int, cid: int, code: int = nl.ConnErr.TCP_CONN_CLOSE) -> nl.Message:
    return nl.Message(0, nl.Ev.K_CONN_ERROR, 0, struct.pack("<III", sid, cid, code).ljust(16, b"\0"), b"")


class FakeKernel:
    """A NETLINK_ISCSI link: records requests, answers each with retcode 0, hands out scripted events."""

    handle = 1

    def __init__(self, events: list[nl.Message] | None = None) -> None:
        self.events: list[nl.Message] = []
        self.script = list(events or [])
        self.requests: list[tuple[str, dict[str, Any], bytes]] = []
        self.on_empty: Any = None

    def call(self, datagram: bytes, *, timeout: float = 10.0) -> nl.Message:
        kind = nl.Ev(nl.NLMSGHDR.unpack_from(datagram)[1])
        union = datagram[16 + 16 : 16 + 40]
        payload = datagram[16 + 56 :]
        fields: dict[str, Any] = {}
        if kind == nl.Ev.STOP_CONN:
            fields = dict(
                zip(
                    ("sid", "cid", "conn_handle", "flag"),
                    struct.unpack_from(nl.U_STOP_CONN, union),
                    strict=True,
                )
            )
        elif kind == nl.Ev.SET_PARAM:
            _sid, _cid, param, length = struct.unpack_from(nl.U_SET_PARAM, union)
            fields = {"param": nl.Param(param), "value": payload[: length - 1].decode()}
        elif kind == nl.Ev.BIND_CONN:
            names = ("sid", "cid", "transport_eph", "is_leading")
            fields = dict(zip(names, struct.unpack_from(nl.U_BIND_CONN, union), strict=True))
        self.requests.append((kind.name, fields, payload))
        return nl.Message(int(kind), int(kind), 0, bytes(16), b"")

    def wait_event(self, match: Any, *, deadline: float) -> nl.Message:
        for i, msg in enumerate(self.events):  # read earlier, kept (as IscsiNetlink keeps them)
            if match(msg):
                return self.events.pop(i)
        for i, msg in enumerate(self.script):
            if match(msg):
                return self.script.pop(i)
        if self.on_empty is not None:
            self.on_empty()
        raise TimeoutError("no event")

    def kinds(self) -> list[str]:
        return [kind for kind, _f, _p in self.requests]

    def params(self) -> dict[nl.Param, str]:
        return {f["param"]: f["value"] for kind, f, _p in self.requests if kind == "SET_PARAM"}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def sysfs_with(tmp_path: Path, state: str, sid: int = 3) -> Path:
    folder = tmp_path / "sys" / "class" / "iscsi_session" / f"session{sid}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "state").write_text(state + "\n")
    return tmp_path / "sys"


def make_keeper(
    tmp_path: Path, kernel: FakeKernel, connect: Any, *, state: str = "LOGGED_IN", **config: Any
) -> tuple[recovery.Keeper, list[tuple[int, str]], Clock]:
    said: list[tuple[int, str]] = []
    clock = Clock()

    def say(text: str, level: int = 6) -> None:
        said.append((level, text))

    keeper = recovery.Keeper(
        KeeperConfig((SESSION,), **config),
        kernel,  # type: ignore[arg-type]
        say,
        sysfs=sysfs_with(tmp_path, state),
        connect=connect,
        clock=clock,
        sleep=clock.sleep,
    )
    return keeper, said, clock


def paired_connect() -> tuple[Any, list[socket.socket]]:
    """A connect that always succeeds (one end of a socket pair), and the sockets it made."""
    pairs: list[socket.socket] = []

    def connect(address: str, port: int, timeout: float) -> socket.socket:
        a, b = socket.socketpair()
        pairs.extend((a, b))
        return a

    return connect, pairs


def fake_login(seen: list[Any]) -> Any:
    def login(link: Any, sid: int, cid: int, settings: Any, **_kw: Any) -> LoginResult:
        seen.append(settings)
        return LoginResult(Params(), tsih=7, cmd_sn=1, exp_stat_sn=42, max_cmd_sn=10, auth="CHAP")

    return login


def test_a_connection_error_is_recovered_as_iscsid_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kernel = FakeKernel([conn_error(3, 0)])
    tries: list[tuple[str, int]] = []
    sockets: list[socket.socket] = []

    def connect(address: str, port: int, timeout: float) -> socket.socket:
        tries.append((address, port))
        if len(tries) < 3:
            raise native.TcpFailed(f"cannot connect to {address}:{port}", errno.ECONNREFUSED)
        ours, _theirs = socket.socketpair()
        sockets.extend((ours, _theirs))
        return ours

    logins: list[Any] = []
    monkeypatch.setattr(recovery, "kernel_login", fake_login(logins))
    keeper, said, _clock = make_keeper(tmp_path, kernel, connect, recovery_timeout=600, ping=5)
    kernel.on_empty = keeper.stop  # after the recovery: the power-off
    keeper.serve()
    kinds = kernel.kinds()
    # the stop for recovery comes first, and again after each failed connection
    assert kinds[0] == "STOP_CONN" and kernel.requests[0][1]["flag"] == nl.STOP_CONN_RECOVER
    assert kinds[:3] == ["STOP_CONN", "STOP_CONN", "STOP_CONN"]
    assert tries == [("10.0.2.2", 3260)] * 3
    bind_at = kinds.index("BIND_CONN")
    assert kernel.requests[bind_at][1]["sid"] == 3 and kernel.requests[bind_at][1]["is_leading"] == 1
    start_at = kinds.index("START_CONN")
    assert bind_at < start_at
    params = kernel.params()
    assert params[nl.Param.PING_TMO] == "5" and params[nl.Param.RECV_TMO] == "5"
    assert params[nl.Param.SESS_RECOVERY_TMO] == "600"
    assert params[nl.Param.PASSWORD] == "secret-secret-1"  # set again for the kernel, never logged
    assert params[nl.Param.EXP_STATSN] == "42"  # the negotiated ones after the login
    assert logins[0].isid == ISID and logins[0].target == IQN and logins[0].chap == TARGET.chap
    assert len(keeper.recoveries) == 1
    assert any("logged in again" in text for _level, text in said)
    assert not any("secret-secret-1" in text for _level, text in said)
    # the power-off: a Logout Request through the kernel, then the connection ends
    send = [p for kind, _f, p in kernel.requests if kind == "SEND_PDU"]
    assert send and send[-1][0] == 0x46  # immediate Logout Request
    assert kernel.requests[-1][0] == "STOP_CONN" and kernel.requests[-1][1]["flag"] == nl.STOP_CONN_TERM
    for s in sockets:
        s.close()


def test_a_refused_authentication_is_retried_ever_more_slowly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second at first (a target restoring its accounts refuses for a moment), then up to a minute."""
    kernel = FakeKernel()
    connect, pairs = paired_connect()
    calls = [0]

    def login(*_a: Any, **_kw: Any) -> LoginResult:
        calls[0] += 1
        if calls[0] <= 9:
            raise AuthenticationFailed("the target's CHAP answer is wrong")
        result: LoginResult = fake_login([])(*_a, **_kw)
        return result

    monkeypatch.setattr(recovery, "kernel_login", login)
    keeper, said, clock = make_keeper(tmp_path, kernel, connect)
    t0 = clock.now
    assert keeper.recover(SESSION, "test")
    refused = [(level, text) for level, text in said if "refused the credentials" in text]
    assert {level for level, _text in refused} == {3}
    waits = [float(text.rsplit("next try in ", 1)[1].removesuffix(" s")) for _level, text in refused]
    ceilings = [1, 2, 4, 8, 16, 32, 60, 60, 60]  # each wait is drawn from [ceiling / 2, ceiling]
    assert len(waits) == len(ceilings)
    assert all(c / 2 - 0.05 <= w <= c + 0.05 for w, c in zip(waits, ceilings, strict=True)), waits
    assert clock.now - t0 == pytest.approx(sum(waits), abs=0.5)
    for s in pairs:
        s.close()


def _recover_with_a_stale_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stale: nl.Message, *, drop: bool
) -> int:
    """The attempts one recovery takes when ``stale``, of an earlier connection, waits unread."""
    kernel = FakeKernel()
    kernel.events.append(stale)
    connect, pairs = paired_connect()

    def login(link: Any, sid: int, cid: int, settings: Any, **_kw: Any) -> LoginResult:
        """Takes the first answer waiting for its connection, as kernel_login does."""
        try:
            event = link.wait_event(
                nl.event_for(sid, cid, (nl.Ev.K_RECV_PDU, nl.Ev.K_CONN_ERROR)), deadline=0
            )
        except TimeoutError:
            result: LoginResult = fake_login([])(link, sid, cid, settings)
            return result
        if event.type == nl.Ev.K_CONN_ERROR:
            raise native.ConnectionLost(event.conn_error())
        raise AuthenticationFailed("the target did not answer our CHAP challenge")

    monkeypatch.setattr(recovery, "kernel_login", login)
    if not drop:
        monkeypatch.setattr(recovery.Keeper, "_drop_stale", lambda _self, _s: None)
    keeper, said, _clock = make_keeper(tmp_path, kernel, connect)
    assert keeper.recover(SESSION, "test")
    for s in pairs:
        s.close()
    return int(
        next(text for _l, text in said if "logged in again" in text).split("attempt ")[1].split(";")[0]
    )


def _login_response_event(sid: int, cid: int) -> nl.Message:
    """A RECV_PDU of the session (its PDU left out: the fake login reads only that one came)."""
    return nl.Message(0, nl.Ev.K_RECV_PDU, 0, struct.pack("<II", sid, cid).ljust(16, b"\0"), b"")


@pytest.mark.parametrize("kind", ["conn_error", "recv_pdu"])
def test_an_earlier_connections_error_or_answer_is_not_taken_for_the_new_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    stale = conn_error(3, 0) if kind == "conn_error" else _login_response_event(3, 0)
    assert _recover_with_a_stale_event(tmp_path, monkeypatch, stale, drop=True) == 1
    # the negative control: kept, the stale event fails the first attempt (a late answer taken
    # for the new login's, refused for authentication, cost a minute before the pace above)
    assert _recover_with_a_stale_event(tmp_path, monkeypatch, stale, drop=False) == 2


def test_the_recovery_timeout_running_out_names_the_volumes_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kernel = FakeKernel()
    keeper, said, _clock = make_keeper(
        tmp_path, kernel, None, state="FREE", recovery_timeout=10, volumes=(("Storage", "/dev/sda2"),)
    )
    attempts = [0]

    def connect(address: str, port: int, timeout: float) -> socket.socket:
        attempts[0] += 1
        if attempts[0] >= 5:
            keeper.stop()
        raise native.TcpFailed("cannot connect", errno.ECONNREFUSED)

    keeper.connect = connect
    assert not keeper.recover(SESSION, "test")
    named = [text for level, text in said if "recovery timeout" in text]
    assert len(named) == 1 and "Storage (/dev/sda2)" in named[0] and "10 s" in named[0]


def test_a_session_found_failed_at_start_is_recovered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kernel = FakeKernel()
    pairs: list[socket.socket] = []
    keeper, _said, _clock = make_keeper(tmp_path, kernel, None, state="FAILED")

    def connect(address: str, port: int, timeout: float) -> socket.socket:
        a, b = socket.socketpair()
        pairs.extend((a, b))
        sysfs_with(tmp_path, "LOGGED_IN")
        keeper.stop()
        return a

    keeper.connect = connect
    monkeypatch.setattr(recovery, "kernel_login", fake_login([]))
    keeper.serve()
    assert "START_CONN" in kernel.kinds() and len(keeper.recoveries) == 1
    for s in pairs:
        s.close()


def test_logout_pdu() -> None:
    wire = recovery.logout_pdu(0)
    assert len(wire) == 48 and wire[0] == 0x46 and wire[1] == 0x80


# ---------------------------------------------------------------- configuration and options


def test_config_round_trip_keeps_the_secrets_for_the_keeper() -> None:
    config = KeeperConfig((SESSION,), 600, 5, (("System", "/dev/sda1"), ("Storage", "/dev/sda2")))
    text = config.to_json()
    assert KeeperConfig.from_json(text) == config
    data = json.loads(text)
    data["sessions"][0]["isid"] = "0102"
    with pytest.raises(ParseError):
        KeeperConfig.from_json(json.dumps(data))
    with pytest.raises(ParseError):
        KeeperConfig.from_json("[]")


def test_recovery_timeout_and_keeper_options() -> None:
    assert parse_timeout("never") == -1 and parse_timeout("30") == 30
    with pytest.raises(ValueError):
        parse_timeout("0")
    assert parse_options("").keeper and parse_options("").session_timeout() == 600
    off = parse_options("iscsiboot.keeper=no")
    assert not off.keeper and off.session_timeout() == 120
    assert parse_options("iscsiboot.keeper=no iscsiboot.recovery_timeout=10").session_timeout() == 10
    assert parse_options("iscsiboot.recovery_timeout=never").session_timeout() == -1
    for bad in ("iscsiboot.keeper=maybe", "iscsiboot.recovery_timeout=soon"):
        with pytest.raises(ParseError):
            parse_options(bad)


def test_session_params_ping() -> None:
    params = dict(nl.session_params(TARGET, ME, recovery_timeout=-1, ping=5))
    assert params[nl.Param.PING_TMO] == "5" and params[nl.Param.SESS_RECOVERY_TMO] == "-1"
    assert dict(nl.session_params(TARGET, ME))[nl.Param.PING_TMO] == "0"


def test_the_image_carries_the_keeper_for_kernel_iscsi_only() -> None:
    assert "iscsiboot.agent.keeper.recovery" in transport_modules("kernel")
    assert "iscsiboot.agent.daemons" in transport_modules("kernel")
    assert not any(".nbd" in name for name in transport_modules("kernel"))
    assert "iscsiboot.agent.keeper.recovery" in transport_modules("auto")
    assert "iscsiboot.agent.keeper.recovery" not in transport_modules("nbd")
    assert "iscsiboot.agent.daemons" in transport_modules("nbd")


# ---------------------------------------------------------------- the start


def test_parse_status() -> None:
    assert launch.parse_status("ready 42 9000") == launch.Started(42, 9000)
    with pytest.raises(launch.KeeperFailed, match="no iscsi_tcp"):
        launch.parse_status("failed no iscsi_tcp")


def test_a_keeper_that_cannot_start_says_why(tmp_path: Path) -> None:
    log = tmp_path / "log"
    with open(log, "wb") as handle, pytest.raises(launch.KeeperFailed, match="iscsi_tcp"):
        launch.start_keeper(KeeperConfig((SESSION,)), timeout=60, log_fd=handle.fileno())
    text = log.read_text()
    assert text.startswith("<") and "iscsiboot-keeper: cannot start" in text
    assert "secret-secret-1" not in text


def test_the_native_backend_gets_the_recovery_timeout_and_the_pings() -> None:
    backend = make_backend("native", recovery_timeout=600, ping=5)
    assert isinstance(backend, native.NativeBackend)
    assert (backend.recovery_timeout, backend.ping, backend.kept) == (600, 5, [])


def test_a_keeper_started_early_and_abandoned_ends_quietly(tmp_path: Path) -> None:
    log = tmp_path / "log"
    with open(log, "wb") as handle:
        pending = launch.spawn_keeper(log_fd=handle.fileno())
        pending.abandon()
        assert pending.process.wait(60) == 0
    assert "not needed" in log.read_text()
    with pytest.raises(launch.KeeperFailed):
        pending.finish(KeeperConfig((SESSION,)))
