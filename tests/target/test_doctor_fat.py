"""``iscsiboot doctor`` over a LibreELEC-layout LUN (GPT, FAT16 System) served by tgtd."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator

import pytest
from disk_support import tool
from doctor_support import ME, OPEN, run_main
from iscsiboot.disk.install import install_image
from iscsiboot.disk.layout import LayoutKind
from iscsiboot.qemu.tgt import Tgtd
from tgt_support import tgtd_missing

NO_EFI = OPEN + "-noefi"


@pytest.fixture(scope="module")
def fat_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Tgtd, str]]:
    reason = tgtd_missing()
    if reason:
        pytest.skip(reason)
    for name in ("mkfs.vfat", "mcopy", "mdel", "syslinux"):
        tool(name)
    work = tmp_path_factory.mktemp("doctor-fat")
    with Tgtd(work / "tgtd") as tgtd:
        append = (
            f"boot=ISCSI=iscsi_initiator={ME},iscsi_target_name={OPEN},iscsi_target_ip=127.0.0.1,"
            f"iscsi_target_port={tgtd.port},LABEL=System disk=LABEL=Storage quiet"
        )
        (work / "KERNEL").write_bytes(b"\x7fkernel" * 1000)
        (work / "SYSTEM").write_bytes(b"hsqs" + bytes(4096))
        images = []
        for name in ("disk.img", "noefi.img"):
            image = work / name
            install_image(image, kernel=work / "KERNEL", system=work / "SYSTEM", append=append, size_mb=48,
                          layout=LayoutKind.LIBREELEC)  # fmt: skip
            images.append(image)
        subprocess.run(
            [tool("mdel"), "-i", f"{images[1]}@@{8192 * 512}", "::/EFI/BOOT/bootx64.efi"],
            check=True, env={**os.environ, "MTOOLS_SKIP_CHECK": "1"},
        )  # fmt: skip
        tgtd.add_target(1, OPEN, [images[0]])
        tgtd.add_target(2, NO_EFI, [images[1]])
        yield tgtd, append


def test_doctor_reads_a_fat_system(fat_lab: tuple[Tgtd, str], capsys: pytest.CaptureFixture[str]) -> None:
    _tgtd, append = fat_lab
    code, out, err = run_main(capsys, "doctor", "--json", "--cmdline", append)
    report = json.loads(out)
    assert code == 0, json.dumps(report, indent=1) + err
    disk = next(lun for lun in report["luns"] if lun["lun"] == 1)
    assert disk["scheme"] == "gpt"
    labels = {p["label"]: p for p in disk["partitions"]}
    assert labels["System"]["fs"] == "vfat" and labels["Storage"]["fs"] == "ext4"
    files = next(c for c in report["checks"] if c["name"] == "system files")
    assert files["ok"] and "/EFI/BOOT/bootx64.efi" in files["detail"] and "/syslinux.cfg" in files["detail"]


def test_doctor_names_a_missing_efi_loader(
    fat_lab: tuple[Tgtd, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _tgtd, append = fat_lab
    code, out, _err = run_main(capsys, "doctor", "--json", "--cmdline", append, "--target", NO_EFI)
    report = json.loads(out)
    assert code == 1
    files = next(c for c in report["checks"] if c["name"] == "system files")
    assert not files["ok"] and "does not boot under UEFI" in files["detail"]
    assert "syslinux.efi" in files["fix"]
