"""``iscsiboot install --portal``: the layout written onto tgtd LUNs by the project's initiator.

Blank LUNs of 512- and 4096-byte blocks take a fake release (mutual CHAP on
one); the backing files then hold the layout and only the data extents were
sent.  A LUN that holds a partition table, one that is too small, a wrong
password and a release whose MD5 does not match are refused with the LUN
unchanged; Ctrl-C while writing logs out and leaves a LUN that ``--wipe``
writes again.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from disk_support import tool
from doctor_support import run_main
from iscsiboot.disk import lunplan
from iscsiboot.disk.fat import open_filesystem
from iscsiboot.disk.layout import LayoutKind
from iscsiboot.disk.lun import Interrupted, LunAccess, install_lun
from iscsiboot.disk.probe import read_partition_table
from iscsiboot.disk.progress import Progress
from iscsiboot.disk.readers import file_reader, window
from iscsiboot.disk.release import open_release
from iscsiboot.qemu.tgt import Tgtd
from iscsiboot.secret import Secret
from release_support import fake_files, make_release_img, make_release_tar
from tgt_support import MIB, tgtd_missing

ME = "iqn.2026-11.org.iscsiboot.test:installer"
USER, SECRET = "installer", "install-secret-0042"
TUSER, TSECRET = "target", "target-secret-0043"
LUN_MIB = 64
SIZES = {"mutual": LUN_MIB, "blocks4k": LUN_MIB, "used": LUN_MIB, "small": 16, "stopped": LUN_MIB,
         "image": LUN_MIB, "digests": LUN_MIB}  # fmt: skip


def _iqn(name: str) -> str:
    return f"iqn.2026-11.org.iscsiboot.test:install-{name}"


@dataclass
class Lab:
    tgtd: Tgtd
    work: Path
    tar: Path
    img: Path
    kernel: bytes
    system: bytes

    def backing(self, name: str) -> Path:
        return self.work / f"{name}.img"

    def args(self, name: str, *extra: str, release: Path | None = None, auto: bool = True) -> list[str]:
        return ["install", "--portal", self.tgtd.portal, "--target", _iqn(name), "--lun", "1",
                "--initiator", ME, "--release", str(release or self.tar), "--system-size", "16M",
                *(["--auto"] if auto else []), *extra]  # fmt: skip


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    reason = tgtd_missing()
    if reason:
        pytest.skip(reason)
    for name in ("mkfs.vfat", "mcopy", "syslinux", "sfdisk", "mkfs.ext4"):
        tool(name)
    work = tmp_path_factory.mktemp("install-lun")
    kernel, system = fake_files()
    tar = make_release_tar(work, kernel, system)
    img = make_release_img(work, kernel, system)
    with Tgtd(work / "tgtd") as tgtd:
        for tid, (name, mib) in enumerate(SIZES.items(), start=1):
            backing = work / f"{name}.img"
            with open(backing, "wb") as handle:
                handle.truncate(mib * MIB)
            if name == "used":
                subprocess.run(["sfdisk", "-q", str(backing)], input="label: dos\nstart=2048, type=83\n",
                               text=True, check=True, capture_output=True)  # fmt: skip
            tgtd.add_target(tid, _iqn(name), [backing], block_size=4096 if name == "blocks4k" else None)
        for key in ("HeaderDigest", "DataDigest"):
            tgtd.set_param(list(SIZES).index("digests") + 1, key, "CRC32C")
        tgtd.add_account(USER, Secret(SECRET))
        tgtd.add_account(TUSER, Secret(TSECRET))
        tgtd.bind_account(1, USER)
        tgtd.bind_account(1, TUSER, outgoing=True)
        yield Lab(tgtd, work, tar, img, kernel, system)


def _secret_file(lab: Lab, name: str, value: str) -> str:
    path = lab.work / name
    path.write_text(value + "\n")
    path.chmod(0o600)
    return str(path)


def _system_file(backing: Path, path: str) -> bytes:
    read = file_reader(backing)
    table = read_partition_table(read, size=backing.stat().st_size)
    assert table is not None
    system = table.partitions[0]
    return open_filesystem(window(read, system.start, system.size), "vfat").read_file(path)


def _check_layout(lab: Lab, backing: Path) -> None:
    """The backing file holds a GPT, a FAT System with the release's files, and ext4 Storage."""
    read = file_reader(backing)
    table = read_partition_table(read, size=backing.stat().st_size)
    assert table is not None and table.scheme == "gpt"
    system = table.partitions[0]
    fs = open_filesystem(window(read, system.start, system.size), "vfat")
    assert fs.read_file("/KERNEL") == lab.kernel
    assert fs.read_file("/SYSTEM", limit=1 << 24) == lab.system
    assert fs.exists("/syslinux.cfg") and fs.exists("/ldlinux.sys") and fs.exists("/EFI/BOOT/bootx64.efi")


def test_mutual_chap_release_tar(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    """No --auto: the boot settings are the connection's (portal, target, LUN, mutual CHAP)."""
    argv = lab.args("mutual", "--json", "--username", USER, "--password-file",
                    _secret_file(lab, "pw", SECRET), "--reverse-username", TUSER,
                    "--reverse-password-file", _secret_file(lab, "rpw", TSECRET), auto=False)  # fmt: skip
    code, out, err = run_main(capsys, *argv)
    assert code == 0, err
    report = json.loads(out)
    assert report["kind"] == "lun" and report["size"] == LUN_MIB * MIB
    transfer = report["transfer"]
    assert transfer["block_size"] == 512
    # only the extents that hold data travel: a small share of the LUN
    assert transfer["sent"] < LUN_MIB * MIB // 4, transfer["sent"]
    assert all(e["offset"] % 512 == 0 and e["length"] % 512 == 0 for e in transfer["extents"])
    assert "reading back" in err and SECRET not in err + out and TSECRET not in err + out
    assert "syslinux.cfg holds CHAP secrets" in err
    _check_layout(lab, lab.backing("mutual"))
    conf = _system_file(lab.backing("mutual"), "/syslinux.cfg").decode()
    assert f"iscsi_target_name={_iqn('mutual')}" in conf and f"iscsi_target_port={lab.tgtd.port}" in conf
    assert f"iscsi_initiator={ME}" in conf and f"iscsi_in_password={TSECRET}" in conf


def test_doctor_passes_on_the_installed_lun(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    """After the mutual-CHAP install above: every check of the doctor is ok on that LUN."""
    code, out, err = run_main(
        capsys, "doctor", "--json", "--portal", lab.tgtd.portal, "--target", _iqn("mutual"), "--lun", "1",
        "--initiator", ME, "--username", USER, "--password-file", _secret_file(lab, "pw", SECRET),
        "--reverse-username", TUSER, "--reverse-password-file", _secret_file(lab, "rpw", TSECRET),
    )  # fmt: skip
    report = json.loads(out)
    failed = [c for c in report["checks"] if not c["ok"]]
    assert code == 0 and not failed, json.dumps(failed, indent=1) + err


def test_blocks_of_4096_from_img_gz(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, *lab.args("blocks4k", "--json", release=lab.img))
    assert code == 0, err
    transfer = json.loads(out)["transfer"]
    assert transfer["block_size"] == 4096
    assert all(e["offset"] % 4096 == 0 and e["length"] % 4096 == 0 for e in transfer["extents"])
    assert "4096-byte blocks" in err  # the partition table's 512-byte sectors are named
    _check_layout(lab, lab.backing("blocks4k"))


def test_digests_on_install_and_doctor(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, *lab.args("digests", "--json", "--digest", "crc32c"))
    assert code == 0, err
    assert json.loads(out)["transfer"]["digests"] is True
    _check_layout(lab, lab.backing("digests"))
    code, out, err = run_main(capsys, "doctor", "--json", "--digest", "crc32c", "--portal", lab.tgtd.portal,
                              "--target", _iqn("digests"), "--lun", "1", "--initiator", ME)  # fmt: skip
    assert json.loads(out)["luns"], err  # it logged in with digests and read the LUN
    # tgtd's discovery sessions take no digests (its keys are per target): discover says so
    code, _out, err = run_main(capsys, "discover", "--digest", "crc32c", "--portal", lab.tgtd.portal)
    assert code == 1 and "HeaderDigest" in err, err


def test_refuses_a_lun_with_a_partition_table(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    before = lab.backing("used").read_bytes()
    code, _out, err = run_main(capsys, *lab.args("used"))
    assert code == 2, err
    assert "MBR partition table" in err and "--wipe" in err and "nothing was written" in err
    assert lab.backing("used").read_bytes() == before


def test_refuses_a_small_lun(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run_main(capsys, *lab.args("small"))
    assert code == 2, err
    assert "too small" in err and "nothing was written" in err
    assert not any(lab.backing("small").read_bytes())


def test_wrong_password(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    wrong = "wrong-secret-00000"
    argv = lab.args(
        "mutual", "--wipe", "--username", USER, "--password-file", _secret_file(lab, "bad", wrong)
    )
    code, _out, err = run_main(capsys, *argv)
    assert code == 1, err
    assert "authentication" in err.lower() and wrong not in err


def test_md5_mismatch(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    folder = lab.work / "bad-release"
    folder.mkdir()
    bad = make_release_tar(folder, lab.kernel, lab.system, bad_md5="SYSTEM")
    code, _out, err = run_main(capsys, *lab.args("image", release=bad))
    assert code == 2, err
    assert "SYSTEM" in err and "MD5" in err
    assert not any(lab.backing("image").read_bytes())


class _StopAfter(Progress):
    """A progress that presses Ctrl-C once ``limit`` bytes were written."""

    def __init__(self, limit: int) -> None:
        super().__init__(bar=False)
        self.limit = limit

    def advance(self, count: int) -> None:
        super().advance(count)
        if self.what == "writing" and self.done >= self.limit:
            raise KeyboardInterrupt


def test_interrupt_logs_out_and_wipe_writes_again(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    from iscsiboot.disk.install import install  # noqa: PLC0415

    release = open_release(lab.tar, lab.work)
    name = lunplan.LunName("127.0.0.1", lab.tgtd.port, _iqn("stopped"), 1)

    def build(image: Path, size: int):  # type: ignore[no-untyped-def]
        return install(image=image, size=size, kernel=release.kernel, system=release.system,
                       system_size=16 * MIB, layout=LayoutKind.LIBREELEC, append="quiet")  # fmt: skip

    def room(n: lunplan.LunName, size: int, bs: int) -> None:
        lunplan.check_room(n, capacity=size, block_size=bs, kind=LayoutKind.LIBREELEC, system_size=16 * MIB)

    access = LunAccess(name, ME)
    with pytest.raises(Interrupted) as stopped:
        install_lun(access, build, wipe=False, check_room=room, progress=_StopAfter(2 * MIB))
    assert "incomplete" in str(stopped.value) and "--wipe" in str(stopped.value)
    assert stopped.value.exit_code == 130
    assert "GPT partition table" in _refusal(lab, capsys)  # part of it was written
    code, out, err = run_main(capsys, *lab.args("stopped", "--wipe", "--json"))
    assert code == 0, err
    assert json.loads(out)["transfer"]["sent"] > 0
    _check_layout(lab, lab.backing("stopped"))


def _refusal(lab: Lab, capsys: pytest.CaptureFixture[str]) -> str:
    code, _out, err = run_main(capsys, *lab.args("stopped"))
    assert code == 2
    return err
