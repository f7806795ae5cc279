"""The tgtd controller against a real tgtd, checked with libiscsi's iscsi-ls (independent initiator)."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from iscsiboot.errors import CommandError
from iscsiboot.qemu.tgt import CONTROL_PORT_MAX, Tgtd, free_control_port
from iscsiboot.secret import Secret
from tgt_support import tgtd_or_skip

IQN = "iqn.2026-11.org.iscsiboot.test:tgt"


def _iscsi_ls(
    url: str, initiator: str = "iqn.2026-11.org.iscsiboot.test:client"
) -> subprocess.CompletedProcess[str]:
    if shutil.which("iscsi-ls") is None:
        pytest.skip("iscsi-ls not installed (Debian package libiscsi-bin)")
    return subprocess.run(
        ["iscsi-ls", "-i", initiator, "-s", url], capture_output=True, text=True, timeout=30, check=False
    )


def test_free_control_port_is_in_tgtd_range() -> None:
    assert 0 < free_control_port(40000) <= CONTROL_PORT_MAX
    assert free_control_port(1234) in range(1, CONTROL_PORT_MAX + 1)


def test_serves_luns_and_stops(tmp_path: Path) -> None:
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\0" * (8 << 20))
    with tgtd_or_skip(tmp_path / "w") as tgtd:
        tgtd.add_target(1, IQN, [disk, disk])
        done = _iscsi_ls(f"iscsi://{tgtd.portal}")
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"Target:{IQN}" in done.stdout
        assert "Lun:1" in done.stdout and "Lun:2" in done.stdout
        port = tgtd.port
        assert tgtd.running
    assert not tgtd.running
    with socket.socket() as sock:
        sock.settimeout(1)
        assert sock.connect_ex(("127.0.0.1", port)) != 0
    tgtd.stop()  # idempotent


def test_chap_and_masked_failures(tmp_path: Path) -> None:
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\0" * (4 << 20))
    password = Secret("tgt-secret-0123")
    with tgtd_or_skip(tmp_path / "w") as tgtd:
        tgtd.add_target(1, IQN, [disk])
        tgtd.add_account("alice", password)
        tgtd.bind_account(1, "alice")
        good = _iscsi_ls(f"iscsi://alice%{password.reveal()}@{tgtd.portal}")
        assert good.returncode == 0 and "Lun:1" in good.stdout, good.stdout
        bad = _iscsi_ls(f"iscsi://alice%wrong-secret-99@{tgtd.portal}")
        assert "Authentication failure" in bad.stdout + bad.stderr
        with pytest.raises(CommandError) as caught:
            tgtd.add_account("alice", password)  # exists already: tgtadm fails
        assert password.reveal() not in str(caught.value)
        assert password.reveal() not in " ".join(caught.value.argv)


def test_acl_by_name_and_offline(tmp_path: Path) -> None:
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\0" * (4 << 20))
    allowed = "iqn.2026-11.org.iscsiboot.test:allowed"
    with tgtd_or_skip(tmp_path / "w") as tgtd:
        tgtd.add_target(1, IQN, [disk], initiators=[allowed])
        ok = _iscsi_ls(f"iscsi://{tgtd.portal}", allowed)
        assert "Lun:1" in ok.stdout, ok.stdout + ok.stderr
        refused = _iscsi_ls(f"iscsi://{tgtd.portal}", "iqn.2026-11.org.iscsiboot.test:other")
        assert "Lun:1" not in refused.stdout
        tgtd.set_state(1, "offline")
        assert "State: offline" in tgtd.show()
        tgtd.set_state(1, "ready")
        assert "State: ready" in tgtd.show()


def test_two_daemons_do_not_interfere(tmp_path: Path) -> None:
    with tgtd_or_skip(tmp_path / "a") as first, Tgtd(tmp_path / "b") as second:
        assert first.control_port != second.control_port
        assert first.port != second.port
        first.add_target(1, IQN, [])
        assert IQN in first.show()
        assert IQN not in second.show()
