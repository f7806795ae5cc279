"""``iscsiboot install --portal``: the layout written onto tgtd LUNs by the project's initiator.

Blank LUNs of 512- and 4096-byte blocks take a fake release with mutual
CHAP; the backing files then hold the layout in the LUN's own sectors, only
the data extents were sent, and ``iscsiboot doctor`` finds every check ok on
both.  The 4096-byte LUN's bytes, attached to a loop device of 4096-byte
sectors, show the kernel the GPT's partitions with the System FAT and the
Storage ext4.  The seed layout on a 4096-byte LUN, a LUN that holds a
partition table, one that is too small, a wrong password and a release whose
MD5 does not match are refused with the LUN unchanged; Ctrl-C while writing
logs out and leaves a LUN that ``--wipe`` writes again.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from disk_support import blkid, sh, tool
from doctor_support import run_main
from iscsiboot.disk import lunplan
from iscsiboot.disk.fat import Fat, open_filesystem
from iscsiboot.disk.layout import LayoutKind
from iscsiboot.disk.lun import Interrupted, LunAccess, install_lun
from iscsiboot.disk.probe import le32, read_partition_table
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
         "image": LUN_MIB, "digests": LUN_MIB, "seed4k": LUN_MIB}  # fmt: skip
BLOCKS_4K = ("blocks4k", "seed4k")  # served in blocks of 4096 bytes
MUTUAL = ("mutual", "blocks4k")  # the targets that ask for mutual CHAP


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

    def mutual(self) -> list[str]:
        """The login options of mutual CHAP (secrets in files)."""
        return ["--username", USER, "--password-file", _secret_file(self, "pw", SECRET), "--reverse-username",
                TUSER, "--reverse-password-file", _secret_file(self, "rpw", TSECRET)]  # fmt: skip

    def doctor(self, capsys: pytest.CaptureFixture[str], name: str) -> tuple[dict, str]:  # type: ignore[type-arg]
        """``iscsiboot doctor --json`` with mutual CHAP against LUN 1 of target ``name``: (report, stderr)."""
        code, out, err = run_main(capsys, "doctor", "--json", "--portal", self.tgtd.portal, "--target",
                                  _iqn(name), "--lun", "1", "--initiator", ME, *self.mutual())  # fmt: skip
        report = json.loads(out)
        failed = [c for c in report["checks"] if not c["ok"]]
        assert code == 0 and not failed, json.dumps(failed, indent=1) + err
        return report, err


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
            tgtd.add_target(tid, _iqn(name), [backing], block_size=4096 if name in BLOCKS_4K else None)
        for key in ("HeaderDigest", "DataDigest"):
            tgtd.set_param(list(SIZES).index("digests") + 1, key, "CRC32C")
        tgtd.add_account(USER, Secret(SECRET))
        tgtd.add_account(TUSER, Secret(TSECRET))
        for name in MUTUAL:
            tgtd.bind_account(list(SIZES).index(name) + 1, USER)
            tgtd.bind_account(list(SIZES).index(name) + 1, TUSER, outgoing=True)
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


def _check_layout(lab: Lab, backing: Path, *, sector_size: int = 512) -> None:
    """The backing file holds a GPT, a FAT System with the release's files, and ext4 Storage.

    All in the LUN's sectors: the GPT counts them, the FAT's sectors are as
    large, and Storage's ext4 blocks no smaller; syslinux's BIOS loader (512
    bytes only) is on System only when the sectors are 512 bytes.
    """
    read = file_reader(backing)
    table = read_partition_table(read, size=backing.stat().st_size, sector_size=sector_size)
    assert table is not None and table.scheme == "gpt" and table.sector_size == sector_size
    system, storage = table.partitions
    fs = open_filesystem(window(read, system.start, system.size), "vfat")
    assert isinstance(fs, Fat) and fs.sector == sector_size and fs.bits == 16
    assert fs.read_file("/KERNEL") == lab.kernel
    assert fs.read_file("/SYSTEM", limit=1 << 24) == lab.system
    assert fs.exists("/syslinux.cfg") and fs.exists("/EFI/BOOT/bootx64.efi")
    assert fs.exists("/ldlinux.sys") is (sector_size == 512)
    assert system.bootable is (sector_size == 512)  # legacy-BIOS-bootable where BIOS can boot it
    ext4_block = 1024 << le32(read(storage.start + 1024, 1024), 24)
    assert ext4_block >= sector_size


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
    report, _err = lab.doctor(capsys, "mutual")
    lun = next(lun for lun in report["luns"] if lun["lun"] == 1)
    assert lun["block_size"] == 512 and lun["scheme"] == "gpt"


def test_blocks_of_4096_from_img_gz(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    """The layout in 4096-byte sectors: GPT header at byte 4096, FAT sectors and ext4 blocks of 4096."""
    code, out, err = run_main(capsys, *lab.args("blocks4k", "--json", *lab.mutual(), release=lab.img,
                                                auto=False))  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    transfer = report["transfer"]
    assert transfer["block_size"] == 4096 and (report["scheme"], report["sector_size"]) == ("gpt", 4096)
    assert all(e["offset"] % 4096 == 0 and e["length"] % 4096 == 0 for e in transfer["extents"])
    assert "partition table counts 512-byte sectors" not in err  # the old warning is gone
    assert "syslinux does not boot from it" in err and report["boot_code"] is None  # BIOS: 512 bytes
    assert "/ldlinux.sys" not in {f["path"] for f in report["files"]}
    backing = lab.backing("blocks4k")
    assert backing.read_bytes()[4096:4104] == b"EFI PART"  # the header at LBA 1 of 4096 bytes
    with pytest.raises(Exception, match="no valid GPT header"):  # nothing of it counts 512-byte sectors
        read_partition_table(file_reader(backing), size=backing.stat().st_size, sector_size=512)
    _check_layout(lab, backing, sector_size=4096)


def test_doctor_passes_on_the_4096_byte_lun(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    """The doctor reads the LUN in its blocks of 4096 bytes and finds the layout, every check ok."""
    report, _err = lab.doctor(capsys, "blocks4k")
    lun = next(lun for lun in report["luns"] if lun["lun"] == 1)
    assert (lun["block_size"], lun["scheme"]) == (4096, "gpt")
    assert [(p["fs"], p["label"]) for p in lun["partitions"]] == [("vfat", "System"), ("ext4", "Storage")]


def test_the_kernel_finds_the_4096_byte_layout(lab: Lab, tmp_path: Path) -> None:
    """The LUN's bytes on a loop device of 4096-byte sectors: its partitions hold System (FAT) and Storage."""
    backing = lab.backing("blocks4k")
    table = read_partition_table(file_reader(backing), size=backing.stat().st_size, sector_size=4096)
    assert table is not None
    with _loop_partitions(backing, 4096, tmp_path) as (loop, parts):
        assert blkid(Path(loop)).get("PTTYPE") == "gpt"  # libblkid reads the table in the loop's sectors
        assert [(start, size) for start, size, _node in parts] == [
            (p.start, p.size) for p in table.partitions
        ]
        found = [blkid(node) for _start, _size, node in parts]
        assert [(f.get("TYPE"), f.get("LABEL")) for f in found] == [("vfat", "System"), ("ext4", "Storage")]
        storage = parts[1][2]
        check = subprocess.run(
            [tool("e2fsck"), "-fn", str(storage)], capture_output=True, text=True, check=False
        )
        assert check.returncode == 0, check.stdout + check.stderr
        if _filesystem_known("ext4"):  # the kernel mounts Storage from a device of 4096-byte sectors
            where = tmp_path / "storage"
            where.mkdir()
            sh(tool("mount"), "-t", "ext4", "-o", "ro", storage, where)
            try:
                assert (where / "lost+found").is_dir()
            finally:
                sh(tool("umount"), where)


def test_seed_layout_refused_on_4096_byte_blocks(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    """The seed layout boots from BIOS only, which reads 512-byte sectors: refused, nothing written."""
    code, _out, err = run_main(capsys, *lab.args("seed4k", "--layout", "seed", "--system-size", "32M"))
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "4096-byte blocks" in err and "seed layout" in err and "nothing was written" in err
    assert "--layout libreelec" in err
    assert not any(lab.backing("seed4k").read_bytes())


def _filesystem_known(name: str) -> bool:
    with open("/proc/filesystems", encoding="utf-8") as handle:
        return any(line.split()[-1] == name for line in handle if line.strip())


@contextlib.contextmanager
def _loop_partitions(
    backing: Path, sector_size: int, work: Path
) -> Iterator[tuple[str, list[tuple[int, int, Path]]]]:
    """``backing`` on a read-only loop device of ``sector_size``-byte sectors, with its partitions.

    Yields the loop device and each partition's (start, size in bytes, device
    node) as the kernel has them in sysfs.  A kernel built without GPT support
    (CONFIG_EFI_PARTITION) finds none itself: then ``partx --add`` reads the
    table with libblkid in the loop device's sectors and hands the partitions
    to the kernel.  Without udev the nodes are made here.  The loop device
    (and its partitions with it) is detached on the way out.
    """
    loop = sh(tool("losetup"), "--find", "--show", "--read-only", "--partscan", "--sector-size",
              str(sector_size), backing).strip()  # fmt: skip
    made: list[Path] = []
    try:
        name = Path(loop).name
        assert Path(f"/sys/block/{name}/queue/logical_block_size").read_text().strip() == str(sector_size)
        if not _sysfs_partitions(name):
            sh(tool("partx"), "--add", loop)
        parts: list[tuple[int, int, Path]] = []
        for part in _sysfs_partitions(name):
            node = Path("/dev", part.name)
            if not node.exists():
                major, minor = (int(x) for x in (part / "dev").read_text().split(":"))
                node = work / part.name
                os.mknod(node, 0o600 | stat.S_IFBLK, os.makedev(major, minor))
                made.append(node)
            start, size = (int((part / key).read_text()) * 512 for key in ("start", "size"))  # sysfs: 512s
            parts.append((start, size, node))
        yield loop, parts
    finally:
        for node in made:
            node.unlink(missing_ok=True)
        sh(tool("losetup"), "--detach", loop)


def _sysfs_partitions(name: str) -> list[Path]:
    """The partitions of block device ``name`` in sysfs, in order (briefly waited for)."""
    for _ in range(20):
        found = sorted(
            Path(f"/sys/block/{name}").glob(f"{name}p*"), key=lambda p: int(p.name[len(name) + 1 :])
        )
        if found:
            return found
        time.sleep(0.05)
    return []


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
