"""The initramfs builder's pure parts: newc writer (checked with the real cpio), modules, ELF, plan."""

from __future__ import annotations

import dataclasses
import lzma
import marshal
import os
import py_compile
import re
import shutil
import stat
import subprocess
import tempfile
import traceback
import types
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from iscsiboot.agent.phases import lease
from iscsiboot.errors import UsageError
from iscsiboot.initramfs import cpio, elf, modules, pyruntime
from iscsiboot.initramfs.build import Compression, compress, decompress, xz_filters
from iscsiboot.initramfs.cli import register
from iscsiboot.initramfs.plan import PlanInputs, Variant, absolute_dep, make_plan, normalize_applet
from iscsiboot.initramfs.target import compiler

NAME = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=12).filter(
    lambda s: s not in (".", "..")
)
PATH = st.lists(NAME, min_size=1, max_size=4).map("/".join)


@st.composite
def file_sets(draw: st.DrawFn) -> dict[str, cpio.Entry]:
    files = draw(st.dictionaries(PATH, st.binary(max_size=300), min_size=1, max_size=12))
    out: dict[str, cpio.Entry] = {}
    for path, data in files.items():
        parts = path.split("/")
        # a path cannot be both a file and a parent folder
        if any("/".join(parts[:i]) in out for i in range(1, len(parts))):
            continue
        if any(p.startswith(path + "/") for p in out):
            continue
        mode = draw(st.sampled_from([0o644, 0o755, 0o600, 0o444]))
        if draw(st.booleans()) and len(out) % 3 == 2:
            out[path] = cpio.Entry.symlink(path, draw(PATH))
        else:
            out[path] = cpio.Entry.file(path, data, mode)
    return out


def _tree(root: Path) -> dict[str, tuple[str, int, bytes]]:
    found: dict[str, tuple[str, int, bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            rel = str(full.relative_to(root))
            st_ = full.lstat()
            if stat.S_ISLNK(st_.st_mode):
                found[rel] = ("link", 0, os.readlink(full).encode())
            elif stat.S_ISDIR(st_.st_mode):
                found[rel] = ("dir", stat.S_IMODE(st_.st_mode), b"")
            else:
                found[rel] = ("file", stat.S_IMODE(st_.st_mode), full.read_bytes())
    return found


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=file_sets())
def test_cpio_round_trips_through_real_cpio(entries: dict[str, cpio.Entry], tmp_path: Path) -> None:
    blob = cpio.write_newc(entries.values())
    dest = Path(tempfile.mkdtemp(dir=tmp_path))
    subprocess.run(["cpio", "-idm", "--quiet", "--no-absolute-filenames"], input=blob, cwd=dest, check=True)
    got = _tree(dest)
    want: dict[str, tuple[str, int, bytes]] = {}
    for entry in cpio.canonical(entries.values()):
        if entry.kind is cpio.Kind.DIR:
            want[entry.path] = ("dir", 0o755, b"")
        elif entry.kind is cpio.Kind.SYMLINK:
            want[entry.path] = ("link", 0, entry.data)
        else:
            want[entry.path] = ("file", entry.mode, entry.data)
    assert got == want
    listing = subprocess.run(["cpio", "-t", "--quiet"], input=blob, capture_output=True, check=True)
    names = listing.stdout.decode().splitlines()
    assert names == [e.path for e in cpio.canonical(entries.values())]
    assert [m.entry for m in cpio.read_newc(blob)] == cpio.canonical(entries.values())


@given(entries=file_sets(), seed=st.randoms())
def test_cpio_is_canonical_whatever_the_order(entries: dict[str, cpio.Entry], seed: object) -> None:
    items = list(entries.values())
    shuffled = items[:]
    seed.shuffle(shuffled)  # type: ignore[attr-defined]
    assert cpio.write_newc(items) == cpio.write_newc(shuffled)
    members = cpio.read_newc(cpio.write_newc(items))
    assert [m.ino for m in members] == list(range(1, len(members) + 1))
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in members)


def test_cpio_layout_padding_trailer_and_mtime() -> None:
    blob = cpio.write_newc([cpio.Entry.file("a/b", b"xyz", 0o755)], mtime=1_700_000_000)
    assert len(blob) % 4 == 0
    assert blob.rstrip(b"\0").endswith(b"TRAILER!!!")
    members = cpio.read_newc(blob)
    assert [m.entry.path for m in members] == ["a", "a/b"]
    assert members[0].entry.kind is cpio.Kind.DIR and members[0].nlink == 2
    assert all(m.mtime == 1_700_000_000 for m in members)
    pos = 0
    for member in members:  # every header starts on a 4-byte boundary
        pos = blob.index(b"070701", pos)
        assert pos % 4 == 0
        pos += 1
        assert member.entry.path


def test_cpio_device_node_listed_by_real_cpio() -> None:
    blob = cpio.write_newc([cpio.Entry.char("dev/console", 5, 1)])
    out = subprocess.run(["cpio", "-tv", "--quiet"], input=blob, capture_output=True, check=True)
    line = next(ln for ln in out.stdout.decode().splitlines() if ln.endswith("dev/console"))
    assert line.startswith("crw-------")
    assert "5," in line and " 1 " in line


def test_cpio_rejects_bad_paths() -> None:
    for bad in ("", "/", "a/../b", "x\0y"):
        with pytest.raises(UsageError):
            cpio.write_newc([cpio.Entry.file(bad, b"")])
    with pytest.raises(UsageError):
        cpio.write_newc([cpio.Entry.file("a", b""), cpio.Entry.file("a/b", b"")])


_S = "kernel/drivers/scsi"
DEP = f"""{_S}/iscsi_tcp.ko: {_S}/libiscsi_tcp.ko {_S}/libiscsi.ko {_S}/scsi_mod.ko
{_S}/libiscsi_tcp.ko: {_S}/libiscsi.ko {_S}/scsi_mod.ko
{_S}/libiscsi.ko: {_S}/scsi_mod.ko
{_S}/scsi_mod.ko:
kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko
kernel/fs/jbd2/jbd2.ko:
kernel/crypto/crc32c_generic.ko:
kernel/arch/x86/crypto/crc32c-intel.ko:
kernel/net/8021q/8021q.ko:
"""
ALIAS = """alias crypto-crc32c crc32c_intel
alias crypto-crc32c crc32c_generic
alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000
alias fs-squashfs squashfs
"""
BUILTIN = "kernel/drivers/virtio/virtio.ko\nkernel/fs/squashfs/squashfs.ko\n"
SOFTDEP = "softdep ext4 pre: crypto-crc32c\n"


def _index() -> modules.ModuleIndex:
    return modules.parse_index(DEP, ALIAS, BUILTIN, SOFTDEP)


def test_module_closure_deps_first_with_crc32c() -> None:
    closure = modules.resolve(_index(), ["iscsi_tcp"])
    assert closure.names[-3:] == ("iscsi_tcp", "crc32c_generic", "crc32c_intel")
    assert (
        closure.names.index("scsi_mod") < closure.names.index("libiscsi") < closure.names.index("iscsi_tcp")
    )
    assert closure.crc32c == ("crc32c_generic", "crc32c_intel")
    assert "kernel/arch/x86/crypto/crc32c-intel.ko" in closure.paths


def test_module_closure_softdep_builtin_and_alias() -> None:
    closure = modules.resolve(_index(), ["ext4", "virtio", "fs-squashfs", "8021q"])
    assert closure.names.index("crc32c_generic") < closure.names.index("ext4")
    assert closure.names.index("jbd2") < closure.names.index("ext4")
    assert closure.builtin == ("virtio", "fs-squashfs")
    assert closure.crc32c == ()  # no iscsi_tcp: the provider came only through ext4's softdep
    assert "8021q" in closure.names


def test_module_unknown_is_usage_error() -> None:
    with pytest.raises(UsageError, match="nosuchmod"):
        modules.resolve(_index(), ["nosuchmod"])


def test_module_name() -> None:
    assert modules.module_name("kernel/arch/x86/crypto/crc32c-intel.ko.xz") == "crc32c_intel"
    assert modules.module_name("kernel/net/8021q/8021q.ko") == "8021q"


def test_elf_reads_python_interpreter_and_needed() -> None:
    python = Path("/usr/bin/python3.11")
    if not python.is_file():
        pytest.skip("Debian python3.11 is not installed")
    info = elf.dynamic_info(python.read_bytes())
    assert info.interpreter == "/lib64/ld-linux-x86-64.so.2"
    assert "libc.so.6" in info.needed and "libm.so.6" in info.needed
    interp, libs = elf.closure([python])
    assert interp == "/lib64/ld-linux-x86-64.so.2"
    sonames = {lib.soname for lib in libs}
    assert {"libc.so.6", "libm.so.6", "libz.so.1", "libexpat.so.1"} <= sonames
    assert all(lib.host_path.is_file() for lib in libs)
    assert elf.dynamic_info(b"#!/bin/sh\n") == elf.DynamicInfo(None, (), ())


def test_compress_xz_uses_crc32_and_gzip_is_deterministic() -> None:
    data = b"hello initramfs " * 1000
    xz = compress(data, Compression.XZ)
    assert xz[:6] == b"\xfd7zXZ\0" and xz[6:8] == b"\x00\x01"  # stream flags: CRC32
    assert lzma.decompress(xz) == data
    assert decompress(xz) == data and decompress(data) == data
    assert compress(data, Compression.GZIP) == compress(data, Compression.GZIP)
    assert compress(data, Compression.GZIP)[4:8] == b"\0\0\0\0"  # mtime 0
    assert decompress(compress(data, Compression.GZIP)) == data
    if shutil.which("zstd"):
        assert decompress(compress(data, Compression.ZSTD)) == data


def test_xz_for_x86_code_adds_bcj_and_sizes_the_dictionary(tmp_path: Path) -> None:
    """The kernel's decoder allocates the dictionary the header names: no more than the archive needs."""
    code = Path("/usr/bin/env").read_bytes()
    plain, x86 = compress(code, Compression.XZ), compress(code, Compression.XZ, x86_code=True)
    assert lzma.decompress(x86) == code and decompress(x86) == code
    assert len(x86) < len(plain)  # branch targets made absolute compress better
    assert xz_filters(3 << 20, x86_code=False)[0]["dict_size"] == 4 << 20
    assert xz_filters(100, x86_code=False)[0]["dict_size"] == 1 << 20
    assert xz_filters(1 << 30, x86_code=False)[0]["dict_size"] == 64 << 20  # preset 9's
    if shutil.which("xz"):  # what the real tool reads in the headers
        path = tmp_path / "x.xz"
        path.write_bytes(x86)
        listing = subprocess.run(
            ["xz", "--robot", "-lvv", str(path)], capture_output=True, text=True, check=True
        )
        assert "--x86 --lzma2=" in listing.stdout and "dict=1MiB" in listing.stdout, listing.stdout
    assert elf.machine(Path("/usr/bin/env").read_bytes()[:20]) == elf.EM_X86_64
    assert elf.machine(b"#!/bin/sh\n" * 3) is None


def test_cpio_order_directories_links_then_files_by_content() -> None:
    elf_head = b"\x7fELF" + b"\0" * 60
    entries = [
        cpio.Entry.file("usr/lib/python3.11/os.pyc", b"pyc"),
        cpio.Entry.file("init", b"#!/bin/sh\n", 0o755),
        cpio.Entry.file("lib/modules/6/kernel/a.ko", elf_head),
        cpio.Entry.file("usr/bin/python3.11", elf_head, 0o755),
        cpio.Entry.symlink("bin", "usr/bin"),
        cpio.Entry.file("usr/lib/iscsiboot/dataclasses.marshal", b"m"),
        cpio.Entry.char("dev/console", 5, 1),
    ]
    order = [m.entry.path for m in cpio.read_newc(cpio.write_newc(entries))]
    dirs = [
        p for p in order if p in {"dev", "lib", "lib/modules", "lib/modules/6", "lib/modules/6/kernel", "usr"}
    ]
    assert order[: len(order) - 7] == sorted(order[: len(order) - 7], key=lambda p: p.split("/"))
    assert set(dirs) <= set(order[: len(order) - 7])
    assert order[-7:] == [
        "bin",
        "usr/bin/python3.11",
        "lib/modules/6/kernel/a.ko",
        "usr/lib/iscsiboot/dataclasses.marshal",
        "usr/lib/python3.11/os.pyc",
        "dev/console",
        "init",
    ]


def _inputs(variant: Variant, replace_init: bool = False) -> PlanInputs:
    here = Path("/usr/bin/env")
    return PlanInputs(
        kernel_version="6.1.0-56-amd64",
        python=here,
        python_files=[("usr/lib/iscsiboot/lib/python3.11/os.pyc", Path("/usr/lib/python3.11/os.py"), True)],
        libraries=[("libc.so.6", here)],
        modules=[("kernel/fs/ext4/ext4.ko", here)],
        module_index=[("modules.dep", here)],
        load_order=("ext4",),
        crc32c=(),
        busybox=here,
        applets=("bin/sh", "sbin/ifconfig", "usr/bin/env"),
        e2fsck=here,
        iscsistart=None,
        variant=variant,
        replace_init=replace_init,
    )


def test_plan_full_layout() -> None:
    items = {i.path: i for i in make_plan(_inputs(Variant.FULL))}
    init = items["init"].content
    assert init.startswith(b"#!/usr/lib/iscsiboot/bin/busybox sh\n")
    assert b"/usr/lib/iscsiboot/lib/ld-linux-x86-64.so.2 --library-path /usr/lib/iscsiboot/lib" in init
    assert b"iscsiboot.agent.init" in items["usr/lib/iscsiboot/libexec/init"].content
    assert items["bin"].kind is cpio.Kind.SYMLINK and items["bin"].content == b"usr/bin"
    assert items["lib64"].content == b"usr/lib64"
    assert items["usr/bin/sh"].content == b"../lib/iscsiboot/bin/busybox"
    assert items["usr/sbin/ifconfig"].content == b"../lib/iscsiboot/bin/busybox"
    assert items["usr/bin/python3.11"].content == b"../lib/iscsiboot/bin/python3.11"
    assert items["dev/console"].rdev == (5, 1)
    assert "usr/lib/modules/6.1.0-56-amd64/kernel/fs/ext4/ext4.ko" in items
    assert "usr/lib/iscsiboot/bin/iscsistart" not in items
    assert "usr/lib/iscsiboot/libexec/e2fsck" in items and "usr/lib/iscsiboot/bin/e2fsck" in items
    assert items["usr/lib/iscsiboot/lib/python3.11/os.pyc"].compile_pyc
    assert not any(p.startswith(("lib64/", "usr/lib/x86_64-linux-gnu")) for p in items)  # no standard loader


def test_plan_packs_the_agents_data_files_beside_its_modules(tmp_path: Path) -> None:
    package = pyruntime.stage_package(tmp_path)
    traced = [str(package / "__init__.py"), str(package / "agent" / "phases" / "network.py")]
    files = {f.archive: f for f in pyruntime.place(traced, tmp_path, tmp_path / "site")}
    folder = "usr/lib/iscsiboot/lib/python3.11/iscsiboot/agent/phases"
    script = files[f"{folder}/{Path(lease.UDHCPC_SCRIPT).name}"]
    assert script.kind is pyruntime.Kind.DATA
    assert files[f"{folder}/network.pyc"].kind is pyruntime.Kind.MODULE
    assert (
        "usr/lib/iscsiboot/lib/python3.11/iscsiboot/py.typed" not in files
    )  # a type checkers' marker, not data
    python_files = [(f.archive, f.source, f.kind is pyruntime.Kind.MODULE) for f in files.values()]
    plan = make_plan(dataclasses.replace(_inputs(Variant.FULL), python_files=python_files))
    items = {i.path: i for i in plan}
    assert items[script.archive].source == script.source and not items[script.archive].compile_pyc
    assert lease.udhcpc_script("/bin/sh").startswith("#!/bin/sh\n")


def test_plan_overlay_writes_only_under_its_prefix() -> None:
    items = {i.path: i for i in make_plan(_inputs(Variant.OVERLAY))}
    outside = sorted(p for p in items if not p.startswith("usr/lib/iscsiboot/"))
    assert outside == []
    assert "init" not in items and "usr/lib/iscsiboot/init" in items
    assert "usr/lib/iscsiboot/bin/busybox" in items
    # the modules and their index under the prefix: the base's index stays as it was
    assert "usr/lib/iscsiboot/modules/6.1.0-56-amd64/kernel/fs/ext4/ext4.ko" in items
    assert "usr/lib/iscsiboot/modules/6.1.0-56-amd64/modules.dep" in items
    assert b"--hook" in items["usr/lib/iscsiboot/README"].content
    replaced = {i.path for i in make_plan(_inputs(Variant.OVERLAY, replace_init=True))}
    assert "init" in replaced


def test_absolute_dep_points_at_the_overlay() -> None:
    text = "kernel/a.ko: kernel/b.ko kernel/c.ko\nkernel/b.ko:\n"
    assert absolute_dep(text, "usr/lib/iscsiboot/modules/6") == (
        "/usr/lib/iscsiboot/modules/6/kernel/a.ko: /usr/lib/iscsiboot/modules/6/kernel/b.ko"
        " /usr/lib/iscsiboot/modules/6/kernel/c.ko\n/usr/lib/iscsiboot/modules/6/kernel/b.ko:\n"
    )


def test_normalize_applet() -> None:
    assert normalize_applet("bin/sh") == "usr/bin/sh"
    assert normalize_applet("usr/sbin/chroot") == "usr/sbin/chroot"
    assert normalize_applet("sbin/ip") == "usr/sbin/ip"


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    exe = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "iscsiboot"
    return subprocess.run(
        [str(exe), "initramfs", "build", *argv], capture_output=True, text=True, check=False
    )


def test_cli_bad_input_exits_2_with_one_line(tmp_path: Path) -> None:
    assert callable(register)  # the module the dispatcher imports
    for argv in (
        ("--replace-init", "--kernel-root", str(tmp_path)),
        ("--kernel-version", "6.1.0-56-amd64"),
        ("--kernel-version", "1", "--modules-root", str(tmp_path / "missing")),
        ("--kernel-root", str(tmp_path)),
        ("--kernel-version", "1", "--modules-root", str(tmp_path), "--compress", "lz4"),
    ):
        done = _cli(*argv)
        assert done.returncode == 2, (argv, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "Traceback" not in done.stderr
    assert not list(tmp_path.iterdir())  # nothing written


def test_compiler_leaves_out_line_numbers_and_tracebacks_still_work(tmp_path: Path) -> None:
    source = b"def f(x):\n    y = [i for i in range(x)]\n    return len(y) / x\n"
    plain = compile(source, "/m.py", "exec", dont_inherit=True)
    bare = compiler.without_lines(plain)

    def trace(code: types.CodeType) -> str:
        namespace: dict[str, object] = {}
        exec(code, namespace)
        try:
            namespace["f"](0)  # type: ignore[operator]
        except ZeroDivisionError:
            return traceback.format_exc()
        raise AssertionError("no error")

    inner = next(c for c in bare.co_consts if isinstance(c, types.CodeType))
    positions = list(inner.co_positions())
    assert len(positions) == len(inner.co_code) // 2  # every instruction is covered
    assert set(positions) == {(None, None, None, None)}
    assert re.search(r'File "/m.py", line (-1|None), in f', trace(bare))  # which one: by 3.11 release
    assert 'File "/m.py", line 3, in f' in trace(plain)  # negative control: the line is there
    assert len(compiler.no_lines(17)) == 3 and compiler.no_lines(0) == b""
    # the .pyc is the standard one: py_compile's header, and its code reads back the same
    src = tmp_path / "m.py"
    src.write_bytes(source)
    out = tmp_path / "m.pyc"
    py_compile.compile(
        str(src), cfile=str(out), dfile="/m.py", doraise=True,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )  # fmt: skip
    ours, theirs = compiler.pyc(source, plain), out.read_bytes()
    assert ours[:16] == theirs[:16]
    assert marshal.loads(ours[16:]) == marshal.loads(theirs[16:]) == plain
    own = "usr/lib/iscsiboot/lib/python3.11/iscsiboot/agent/init.pyc"
    other = "usr/lib/iscsiboot/lib/python3.11/json/decoder.pyc"
    assert pyruntime.keeps_lines(own, 2) and not pyruntime.keeps_lines(other, 2)
    assert pyruntime.keeps_lines(other, 0)
