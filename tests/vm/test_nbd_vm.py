"""The NBD transport in QEMU: an image with no kernel iSCSI, the LUN served as /dev/nbd0 by the
agent's resident daemon, over the same tgtd as the kernel path.

One kept disk is booted twice: the first boot (iPXE sanboot, iBFT, mutual CHAP) writes a file
to Storage, reads the large SYSTEM back and powers off cleanly (the daemon flushes and logs
out); the second (direct kernel boot, explicit options, one-way CHAP) reads the file back.
The faults end in the same named causes as on the kernel path (:data:`SAME_CAUSES`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from iscsiboot.initramfs.build import decompress
from iscsiboot.initramfs.cpio import read_newc
from iscsiboot.qemu.artifacts import prepare
from iscsiboot.qemu.harness import Artifacts
from iscsiboot.qemu.outcome import Outcome
from iscsiboot.qemu.scenario import Mode
from iscsiboot.qemu.system import parse_tests
from iscsiboot.secret import Secret
from vm_support import (
    BOOT_TIMEOUT,
    SAME_CAUSES,
    WRONG_PASSWORD,
    boot,
    expect_failure,
    expect_success,
    explain,
    mutual,
    no_secret_in,
    one_way,
    require_vm,
)

FILLER_MB = 72  # SYSTEM is larger than the 64 MiB the big read must cover
RSS_LIMIT_KIB = 40 * 1024
NBD = "iscsiboot.transport=nbd"  # said on the direct boots; the sanboot's own line relies on auto


@pytest.fixture(scope="module")
def artifacts() -> Artifacts:
    require_vm()
    return prepare(transport="nbd", filler_mb=FILLER_MB)


def expect_nbd(outcome: Outcome, name: str) -> str:
    expect_success(outcome, name)
    why = explain(outcome, name)
    result = outcome.result
    assert result is not None
    assert (result.transport, result.backend) == ("nbd", "nbd"), why
    assert [s.session for s in result.sessions] == ["nbd0"], why
    flash = outcome.system.mounted_at("/flash")
    storage = outcome.system.mounted_at("/storage")
    assert flash is not None and flash.device.startswith("/dev/nbd0p"), why
    assert storage is not None and storage.device.startswith("/dev/nbd0p"), why
    no_secret_in(outcome.console + json.dumps(outcome.to_json()), why)
    return why


class Boots:
    """The kept disk's two boots, each run once for the module's tests."""

    def __init__(self, artifacts: Artifacts, work: Path) -> None:
        self.artifacts = artifacts
        self.disk = work / "kept-disk.img"
        self.work = work
        self._first: Outcome | None = None
        self._second: Outcome | None = None

    def first(self) -> Outcome:
        if self._first is None:
            options = mutual(
                disk=self.disk, until_exit=True, extra_append=("iscsiboot.test=persist,bigread,daemon",)
            )
            self._first = boot("nbd ibft mutual, writes", options, self.artifacts, self.work / "first")
        return self._first

    def second(self) -> Outcome:
        if self._second is None:
            self.first()  # the second boot reads what the first wrote
            options = one_way(mode=Mode.CMDLINE, disk=self.disk, extra_append=(NBD, "iscsiboot.test=persist"))
            self._second = boot("nbd cmdline one-way, reads", options, self.artifacts, self.work / "second")
        return self._second


@pytest.fixture(scope="module")
def boots(artifacts: Artifacts, tmp_path_factory: pytest.TempPathFactory) -> Boots:
    return Boots(artifacts, tmp_path_factory.mktemp("nbd-boots"))


def test_the_image_has_no_kernel_iscsi(artifacts: Artifacts) -> None:
    names = {m.entry.path for m in read_newc(decompress(artifacts.initrd.read_bytes()))}
    modules = {Path(n).name for n in names if n.endswith((".ko", ".ko.xz", ".ko.zst"))}
    assert "nbd.ko" in {m.split(".ko")[0] + ".ko" for m in modules}, sorted(modules)
    for absent in ("iscsi_tcp", "libiscsi", "scsi_transport_iscsi", "iscsi_ibft"):
        assert not any(m.split(".ko")[0] == absent for m in modules), sorted(modules)
    assert any(n.endswith("iscsiboot/agent/nbd/daemon.pyc") for n in names)


def test_sanboot_mutual_chap_over_nbd(boots: Boots) -> None:
    """iPXE sanboot, the iBFT read without iscsi_ibft, mutual CHAP: System and Storage on nbd0."""
    outcome = boots.first()
    why = expect_nbd(outcome, "nbd ibft mutual")
    assert "boot=ISCSI=auto,LABEL=System" in outcome.console, why  # extlinux on the LUN, no transport=
    assert "iscsiboot-nbd: logged in to" in outcome.console, why
    # no iscsi_ibft in the image: the agent read the table itself (SeaBIOS: iPXE's copy in low memory)
    assert outcome.result is not None and outcome.result.ibft is not None, why
    assert not outcome.result.ibft.startswith("kernel view"), why


def test_a_big_read_through_nbd_matches_the_system_image(boots: Boots) -> None:
    outcome = boots.first()
    why = explain(outcome, "nbd big read")
    (line,) = parse_tests(outcome.console).get("bigread", [""])
    words = line.split()
    assert len(words) == 4, why
    digest, size = words[0], int(words[1])
    assert size >= 64 * 1024 * 1024, why
    assert digest == hashlib.sha256(boots.artifacts.system.read_bytes()).hexdigest(), why


def test_the_daemon_is_a_root_storage_daemon_within_its_memory(boots: Boots) -> None:
    outcome = boots.first()
    why = explain(outcome, "nbd daemon")
    daemons = parse_tests(outcome.console).get("daemon", [])
    assert len(daemons) == 1, why
    _pid, argv, rss = daemons[0].split()
    assert argv.startswith("@iscsiboot-nbd"), why  # '@': neither switch_root nor the shutdown kills it
    assert 0 < int(rss) <= RSS_LIMIT_KIB, why


def test_a_clean_power_off_flushes_and_logs_out(boots: Boots) -> None:
    outcome = boots.first()
    why = explain(outcome, "nbd power-off")
    console = outcome.console
    assert "asked to disconnect /dev/nbd0" in console, why
    assert "the kernel disconnects (NBD_CMD_DISC)" in console, why
    assert "flushed and logged out" in console and "stopped (disconnected)" in console, why
    assert "daemons still running at power-off" not in console, why
    assert "the last flush failed" not in console and "logout failed" not in console, why


def test_storage_keeps_what_the_first_boot_wrote(boots: Boots) -> None:
    """Written, synced, powered off cleanly; a direct boot with explicit options reads it back."""
    first, second = boots.first(), boots.second()
    why = expect_nbd(second, "nbd cmdline one-way") + "\n" + explain(first, "nbd first boot")
    (wrote,) = parse_tests(first.console).get("persist", [""])
    (read,) = parse_tests(second.console).get("persist", [""])
    assert wrote.startswith("wrote ") and read.startswith("read "), why
    assert read.split()[1] == wrote.split()[1], why
    assert "boot=ISCSI=iscsi_initiator=" in second.console, why


@pytest.mark.parametrize("fault", sorted(SAME_CAUSES))
def test_faults_end_in_the_kernel_path_s_causes(artifacts: Artifacts, tmp_path: Path, fault: str) -> None:
    """A wrong password and a missing label: the same phase and cause as with kernel iSCSI."""
    if fault == "wrong password":
        options = one_way(mode=Mode.CMDLINE, client_password=Secret(WRONG_PASSWORD), extra_append=(NBD,))
    else:
        options = one_way(mode=Mode.CMDLINE, disk_storage_label="Other", extra_append=(NBD,))
    phase, cause = SAME_CAUSES[fault]
    outcome = boot(f"nbd {fault}", options, artifacts, tmp_path)
    expect_failure(outcome, f"nbd {fault}", phase)
    why = explain(outcome, f"nbd {fault}")
    assert outcome.result is not None
    assert (outcome.result.cause, outcome.result.transport) == (cause, "nbd"), why
    assert outcome.boot_seconds < BOOT_TIMEOUT, why
    no_secret_in(outcome.console + json.dumps(outcome.to_json()), why)


@pytest.mark.parametrize(
    ("fault", "said"),
    [({"lun_block_size": 1024}, "has 1024-byte blocks"), ({"empty_lun": True}, "has a size of 0 bytes")],
    ids=["1024-byte-blocks", "empty-lun"],
)
def test_a_lun_the_kernel_cannot_take_ends_the_boot_with_its_cause(
    artifacts: Artifacts, tmp_path: Path, fault: dict[str, object], said: str
) -> None:
    """The target offers 1024-byte blocks or 0 bytes: the login ends at once in unusable-lun, no
    retries, no hang (the boots above, 512-byte blocks from the same tgt, are the control)."""
    options = one_way(mode=Mode.CMDLINE, extra_append=(NBD,), **fault)
    outcome = boot(f"nbd {said}", options, artifacts, tmp_path)
    expect_failure(outcome, f"nbd {said}", "login")
    why = explain(outcome, f"nbd {said}")
    assert outcome.result is not None
    assert (outcome.result.cause, outcome.result.transport) == ("unusable-lun", "nbd"), why
    assert said in (outcome.result.evidence or ""), why
    assert "after" not in (outcome.result.error or "") or "at the first attempt" in (
        outcome.result.error or ""
    ), why
    assert outcome.result.timeline["login"] < 30, why  # one attempt, far below the phase's deadline
