"""What ``install --portal`` sends and refuses, planned without I/O; its progress lines; releases."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from iscsiboot.disk import lunplan
from iscsiboot.disk.layout import LayoutKind, MiB
from iscsiboot.disk.lunplan import Extent, LunName
from iscsiboot.disk.progress import Progress, bar_text, line_text
from iscsiboot.disk.release import open_release, parse_md5
from iscsiboot.errors import UsageError
from release_support import fake_files, make_release_tar

NAME = LunName("192.0.2.1", 3260, "iqn.2026-11.org.example:disk", 1)
SIZE = 64 * MiB


def test_extents_are_aligned_merged_and_cover_both_edges() -> None:
    got = lunplan.plan_extents([(5 * MiB + 100, 10), (5 * MiB + 600, 10), (9 * MiB, 4096)], size=SIZE,
                               block_size=512)  # fmt: skip
    assert got == (
        Extent(0, MiB),
        Extent(5 * MiB, 1024),  # 100..110 and 600..610 fall in two blocks that touch
        Extent(9 * MiB, 4096),
        Extent(SIZE - MiB, MiB),
    )


def test_extents_at_4096_round_out_to_whole_blocks() -> None:
    got = lunplan.plan_extents([(2 * MiB + 4095, 2), (SIZE - 10, 100)], size=SIZE, block_size=4096)
    assert Extent(2 * MiB, 8192) in got and got[-1] == Extent(SIZE - MiB, MiB)
    assert all(e.offset % 4096 == 0 and e.length % 4096 == 0 for e in got)


def test_extents_merge_overlaps_into_one() -> None:
    got = lunplan.plan_extents([(0, 3 * MiB), (2 * MiB, 2 * MiB)], size=8 * MiB, block_size=512)
    assert got == (Extent(0, 4 * MiB), Extent(7 * MiB, MiB))


def test_extents_need_whole_blocks() -> None:
    with pytest.raises(ValueError, match="whole blocks"):
        lunplan.plan_extents([], size=1000, block_size=512)


def test_chunks_are_one_command_each() -> None:
    pieces = lunplan.chunks(Extent(4096, 5 * MiB + 4096), MiB, 4096)
    assert [p.length for p in pieces] == [MiB] * 5 + [4096]
    assert pieces[1].lba(4096) == (4096 + MiB) // 4096 and pieces[-1].blocks(4096) == 1


def test_too_small_a_lun_is_refused_with_what_it_needs() -> None:
    need = lunplan.minimum_size(LayoutKind.LIBREELEC, 16 * MiB)
    assert need == 4 * MiB + 16 * MiB + 8 * MiB + 512 * 1024
    lunplan.check_room(NAME, capacity=need, block_size=512, kind=LayoutKind.LIBREELEC, system_size=16 * MiB)
    with pytest.raises(UsageError, match="too small") as refused:
        lunplan.check_room(NAME, capacity=need - 512, block_size=512, kind=LayoutKind.LIBREELEC,
                           system_size=16 * MiB)  # fmt: skip
    assert "LUN 1 of iqn.2026-11.org.example:disk at 192.0.2.1:3260" in str(refused.value)


def test_odd_block_sizes_are_refused() -> None:
    with pytest.raises(UsageError, match="blocks of 520 bytes"):
        lunplan.check_room(NAME, capacity=SIZE, block_size=520, kind=LayoutKind.SEED, system_size=16 * MiB)


def test_a_lun_with_data_needs_wipe() -> None:
    lunplan.check_blank(NAME, None, wipe=False)
    lunplan.check_blank(NAME, "a GPT partition table", wipe=True)
    with pytest.raises(UsageError, match="already holds a GPT") as refused:
        lunplan.check_blank(NAME, "a GPT partition table", wipe=False)
    assert refused.value.fix is not None and "--wipe" in refused.value.fix


def test_lun_name_without_a_number() -> None:
    name = LunName("fd00::2", 3260, "iqn.x", None)
    assert str(name) == "the disk LUN of iqn.x at [fd00::2]:3260"


def test_plain_progress_lines_and_the_bar() -> None:
    ticks = iter([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0])
    out = io.StringIO()
    progress = Progress(out, bar=False, clock=lambda: next(ticks))
    progress.begin("writing", 10 * MiB)
    for _ in range(10):
        progress.advance(MiB)
    progress.end()
    lines = out.getvalue().splitlines()
    assert len(lines) == 10 and lines[0] == "writing: 10% (1.0 MiB of 10.0 MiB, 1.0 MiB/s)"
    assert lines[-1].startswith("writing: 100% (10.0 MiB of 10.0 MiB")
    bar = bar_text("writing", 5 * MiB, 10 * MiB, 2.0)
    assert bar.startswith("writing [############............]  50%") and "2.5 MiB/s  0:02 left" in bar
    assert line_text("x", 0, 0, 0.0) == "x: 100% (0 B of 0 B, 0 B/s)"


def test_md5_lines() -> None:
    assert (
        parse_md5("D41D8CD98F00B204E9800998ECF8427E  target/KERNEL\n", "f")
        == "d41d8cd98f00b204e9800998ecf8427e"
    )
    with pytest.raises(UsageError, match="md5sum line"):
        parse_md5("not a digest", "f")


def test_release_tar_is_checked(tmp_path: Path) -> None:
    kernel, system = fake_files()
    good = open_release(make_release_tar(tmp_path, kernel, system), tmp_path)
    assert good.kernel.read_bytes() == kernel and good.system.read_bytes() == system
    assert [name for name, _ in good.md5] == ["KERNEL", "SYSTEM"]
    (tmp_path / "bad").mkdir()
    with pytest.raises(UsageError, match=r"SYSTEM in .* has MD5"):
        open_release(make_release_tar(tmp_path / "bad", kernel, system, bad_md5="SYSTEM"), tmp_path)
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not an archive")
    with pytest.raises(UsageError, match="neither"):
        open_release(junk, tmp_path)


def test_portal_options_are_checked_before_any_login(capsys: pytest.CaptureFixture[str]) -> None:
    from doctor_support import run_main  # noqa: PLC0415

    release = ["--release", "/nonexistent.tar"]
    code, _out, err = run_main(capsys, "install", "--portal", "192.0.2.1", *release)
    assert code == 2 and "--portal needs --target" in err
    portal = ["install", "--portal", "192.0.2.1", "--target", "iqn.x"]
    code, _out, err = run_main(capsys, *portal, "--size", "1G", *release)
    assert code == 2 and "--size applies to --image only" in err
    code, _out, err = run_main(
        capsys, "install", "--image", "/nonexistent/x.img", "--target", "iqn.x", *release
    )
    assert code == 2 and "go with --portal" in err
    code, _out, err = run_main(capsys, *portal, "--kernel", "/k", *release)
    assert code == 2 and "--release given together with --kernel" in err
