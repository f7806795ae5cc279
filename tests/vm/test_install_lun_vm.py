"""A LUN written by ``install --portal`` (the project's initiator, no loop device) boots (QEMU, TCG).

The harness's disk step is replaced by the LUN installer: a blank image is
served by a tgtd of its own, the LibreELEC layout (GPT, FAT16 System, ext4
Storage) goes onto it over iSCSI as data extents, and then the harness serves
that very image and boots it over iPXE sanboot with mutual CHAP to System and
Storage (BIOS).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from iscsiboot.disk import lunplan
from iscsiboot.disk.install import install
from iscsiboot.disk.installreport import InstallReport
from iscsiboot.disk.layout import LayoutKind, MiB
from iscsiboot.disk.lun import LUN_STORAGE_OPTIONS, LunAccess, install_lun
from iscsiboot.disk.progress import Progress
from iscsiboot.qemu import harness
from iscsiboot.qemu.artifacts import prepare
from iscsiboot.qemu.harness import Artifacts, disk_size_mb
from iscsiboot.qemu.scenario import Plan, ScenarioOptions
from iscsiboot.qemu.tgt import Tgtd
from iscsiboot.secret import Secret
from vm_support import BOOT_TIMEOUT, boot, expect_success, explain, require_vm

INSTALLER = "iqn.2026-11.org.iscsiboot.test:installer"
STAGING = "iqn.2026-11.org.iscsiboot.test:staging"


@pytest.fixture(scope="module")
def artifacts() -> Artifacts:
    require_vm()
    return prepare()


def test_lun_installed_over_iscsi_boots(
    artifacts: Artifacts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reports: list[InstallReport] = []

    def install_over_iscsi(p: Plan, arts: Artifacts, *, size_mb: int | None = None) -> Path:
        size = (size_mb or disk_size_mb(arts)) * MiB
        image = p.target.image
        with open(image, "wb") as handle:
            handle.truncate(size)
        system_size = max(8 * MiB, size // 2 // MiB * MiB)
        layout = p.options.disk_layout

        def build(where: Path, lun_size: int) -> InstallReport:
            return install(image=where, size=lun_size, kernel=arts.kernel, initrd=arts.initrd,
                           system=arts.system, append=p.append, label_system=p.options.system_label,
                           label_storage=p.options.written_storage_label, system_size=system_size,
                           serial=True, secrets=p.secrets(), layout=layout,
                           storage_options=LUN_STORAGE_OPTIONS)  # fmt: skip

        def room(name: lunplan.LunName, lun_size: int, block_size: int) -> None:
            lunplan.check_room(
                name, capacity=lun_size, block_size=block_size, kind=layout, system_size=system_size
            )

        with Tgtd(tmp_path / "staging") as tgtd:
            tgtd.add_target(1, STAGING, [image])
            access = LunAccess(lunplan.LunName("127.0.0.1", tgtd.port, STAGING, 1), INSTALLER)
            reports.append(
                install_lun(access, build, wipe=False, check_room=room, progress=Progress(bar=False))
            )
        return image

    monkeypatch.setattr(harness, "build_disk", install_over_iscsi)
    options = ScenarioOptions(
        username="htpc", password=Secret("htpc-secret-12"), reverse_username="nas",
        reverse_password=Secret("nas-secret-345"), layout=LayoutKind.LIBREELEC, timeout=BOOT_TIMEOUT,
    )  # fmt: skip
    outcome = boot("install --portal, libreelec", options, artifacts, tmp_path / "logs")
    why = explain(outcome, "install --portal")
    assert reports, why  # the LUN installer wrote the disk
    transfer = reports[0].transfer
    assert transfer is not None and reports[0].kind == "lun"
    assert transfer.sent < reports[0].size, why
    expect_success(outcome, "install --portal")
    assert "htpc-secret-12" not in outcome.console, why
