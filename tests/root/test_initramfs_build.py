"""Real builds against the downloaded Debian kernel (root tier: apt-get, depmod, chroot)."""

from __future__ import annotations

import gzip
import importlib.util
import json
import lzma
import subprocess
from pathlib import Path

import pytest
from initramfs_support import built_image, need_root, test_kernel, unpack
from iscsiboot.agent.transport import KERNEL_ISCSI_MODULES
from iscsiboot.errors import UsageError
from iscsiboot.initramfs import cpio, modules, pyruntime
from iscsiboot.initramfs.build import build

BIN_DIR = "usr/lib/iscsiboot/bin/"


def test_module_closure_matches_modprobe_on_real_kernel() -> None:
    kernel = test_kernel()
    index = modules.load_index(kernel.modules)
    closure = modules.resolve(index, modules.DEFAULT_MODULES)
    for name in ("iscsi_tcp", "libiscsi", "libiscsi_tcp", "scsi_transport_iscsi", "iscsi_ibft", "ext4"):
        assert name in closure.names
    assert "crc32c_generic" in closure.crc32c
    assert all((kernel.modules / p).is_file() for p in closure.paths)
    # modprobe (kmod) agrees on what iscsi_tcp and ext4 pull in
    for top in ("iscsi_tcp", "ext4", "8021q"):
        shown = subprocess.run(
            ["modprobe", "-d", str(kernel.root), "-S", kernel.version, "--show-depends", top],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        needed = {
            modules.module_name(line.split()[1]) for line in shown.splitlines() if line.startswith("insmod")
        }
        assert needed <= set(closure.names), needed - set(closure.names)
        own = modules.resolve(index, [top], crc32c=False).names
        assert set(own) >= needed


def _inside(root: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["chroot", str(root), *argv],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={"PATH": "/usr/sbin:/usr/bin", "HOME": "/"},
    )


def test_full_image_runs_python_agent_and_tools_in_chroot(tmp_path_factory: pytest.TempPathFactory) -> None:
    need_root()
    out = tmp_path_factory.mktemp("img")
    result = built_image(out)
    print(
        f"full xz: {result.size} bytes ({result.size / 2**20:.2f} MiB), cpio {result.uncompressed}, "
        f"{result.seconds:.1f} s"
    )
    assert result.output is not None and result.output.stat().st_size == result.size
    raw = lzma.decompress(result.output.read_bytes())
    # the real xz tool accepts it too, and its check is CRC32 (what the kernel needs)
    listing = subprocess.run(
        ["xz", "--robot", "-lv", str(result.output)], capture_output=True, text=True, check=True
    )
    assert "CRC32" in listing.stdout
    root = tmp_path_factory.mktemp("root")
    unpack(raw, root)
    names = {m.entry.path: m.entry for m in cpio.read_newc(raw)}
    assert names["dev/console"].kind is cpio.Kind.CHAR and names["dev/console"].rdev == (5, 1)
    assert (root / "init").read_text().startswith("#!/usr/lib/iscsiboot/bin/busybox sh")
    manifest = json.loads((root / "usr/lib/iscsiboot/initramfs.json").read_text())
    assert manifest["kernel"] == result.kernel_version
    assert manifest["modules_index"] == manifest["modules_dir"]  # the full image has one index
    dep = (root / manifest["modules_index"].lstrip("/") / "modules.dep").read_text().splitlines()
    assert sum(line.startswith("kernel/drivers/scsi/iscsi_tcp.ko:") for line in dep) == 1
    assert not list(root.rglob("*.py")), "sources leaked: only sourceless .pyc belong in the image"
    # modules frozen into the interpreter (codecs, importlib.util, ...) are not packed again; os.pyc
    # stays: Python finds its standard library by it (else a warning at every start)
    for frozen in ("codecs", "_collections_abc", "importlib/util", "importlib/_bootstrap_external"):
        assert f"usr/lib/iscsiboot/lib/python3.11/{frozen}.pyc" not in names, frozen
    assert "usr/lib/iscsiboot/lib/python3.11/importlib/__init__.pyc" in names  # a package that is not frozen
    assert "usr/lib/iscsiboot/lib/python3.11/os.pyc" in names
    bare = _inside(root, "/usr/bin/python3.11", "-S", "-c", "import sys; print(sys.prefix)")
    assert (bare.returncode, bare.stdout.strip(), bare.stderr) == (0, "/usr/lib/iscsiboot", "")
    # nothing of the build host's configuration (iscsid.conf may hold CHAP secrets) is packed
    assert sorted(p for p in names if p.startswith("etc/")) == []
    # the runtime runs through its own loader: nothing sits at the standard loader's path
    assert not any(p.startswith(("lib64/", "usr/lib64/", "usr/lib/x86_64-linux-gnu/")) for p in names)
    agent_init = importlib.util.find_spec("iscsiboot.agent.init") is not None
    target = "iscsiboot.agent.init" if agent_init else "iscsiboot.agent"
    done = _inside(root, "/usr/bin/python3.11", "-S", "-c", f"import {target}; import construct; print('ok')")
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
    # the dataclasses' generated code was compiled at build time: none compiles at boot
    cached = _inside(
        root, "/usr/bin/python3.11", "-S", "-c",
        "from iscsiboot.agent.startup import codecache; hook = codecache.install(); "
        "import iscsiboot.agent.runner, iscsiboot.agent.phases.config, iscsiboot.ibft.sources; "
        "from iscsiboot.agent.phases.network import prefetch; prefetch(True); "
        "import pyroute2.dhcp.client; print(hook.hits, hook.misses)",
    )  # fmt: skip
    assert cached.returncode == 0, cached.stderr
    hits, misses = (int(n) for n in cached.stdout.split())
    assert hits > 100 and misses == 0
    # compiled without column ranges (-X no_debug_ranges): line numbers stay for tracebacks
    positions = _inside(
        root, "/usr/bin/python3.11", "-S", "-c",
        "import iscsiboot.model as m; p = list(m.from_dict.__code__.co_positions()); "
        "print(all(col is None for _l, _e, col, _x in p), any(line for line, *_ in p))",
    )  # fmt: skip
    assert positions.stdout.split() == ["True", "True"], positions.stderr
    # the standard library's code has none (optimize 2); a traceback through it still formats
    other = _inside(
        root, "/usr/bin/python3.11", "-S", "-c",
        "import json, re, traceback\n"
        "try:\n    json.loads('[1')\nexcept ValueError:\n    text = traceback.format_exc()\n"
        "p = list(json.decoder.JSONDecoder.raw_decode.__code__.co_positions())\n"
        "print(any(line for line, *_ in p), bool(re.search(r'decoder.py\", line (-1|None), in', text)))",
    )  # fmt: skip
    assert other.stdout.split() == ["False", "True"], other.stderr
    assert "/work/" not in raw.decode("latin-1"), "a build path leaked into the image"
    assert _inside(root, "/bin/sh", "-c", "echo shell-ok").stdout.strip() == "shell-ok"
    version = _inside(root, "/usr/lib/iscsiboot/bin/e2fsck", "-V")
    assert version.returncode == 0, version.stderr
    start = _inside(root, "/usr/lib/iscsiboot/bin/iscsistart", "--version")
    assert start.returncode == 0 and "iscsistart" in start.stdout, start.stderr
    (root / "tmp" / "cmdline").write_text(
        "console=ttyS0 boot=ISCSI=iscsi_initiator=iqn.2024-01.test:c,"
        "iscsi_target_name=iqn.2024-01.test:t,iscsi_target_ip=10.0.2.2,LABEL=System\n"
    )
    plan = _inside(root, "/usr/bin/iscsiboot", "agent", "run", "--dry-run", "--cmdline-file", "/tmp/cmdline")
    assert plan.returncode == 0 and "iqn.2024-01.test:t" in plan.stdout, plan.stderr
    if not agent_init:
        pytest.fail("iscsiboot.agent.init does not exist yet: only iscsiboot.agent was imported")


def test_two_builds_are_byte_identical(tmp_path: Path) -> None:
    kernel = test_kernel()
    stage = tmp_path / "stage"  # one snapshot of the package sources for both builds
    stage.mkdir()
    pyruntime.stage_package(stage)
    first = build(
        kernel=kernel,
        output=tmp_path / "a.cpio.gz",
        compression="gzip",
        cache=tmp_path / "c1",
        package_stage=stage,
    )
    second = build(
        kernel=kernel,
        output=tmp_path / "b.cpio.gz",
        compression="gzip",
        cache=tmp_path / "c2",
        package_stage=stage,
    )
    assert subprocess.run(["cmp", str(first.output), str(second.output)], check=False).returncode == 0
    assert first.sha256 == second.sha256
    print(f"full gzip: {first.size} bytes, first {first.seconds:.1f} s, second {second.seconds:.1f} s")
    raw = gzip.decompress(first.archive)
    assert all(m.mtime == 0 for m in cpio.read_newc(raw))


def test_overlay_lives_under_its_prefix(tmp_path: Path) -> None:
    result = built_image(tmp_path, overlay=True, compression="zstd")
    raw = subprocess.run(["zstd", "-d", "-c", str(result.output)], capture_output=True, check=True).stdout
    paths = {m.entry.path for m in cpio.read_newc(raw)}
    assert not [p for p in paths if not p.startswith("usr/lib/iscsiboot")], "a path outside the prefix"
    assert "usr/lib/iscsiboot/init" in paths and "init" not in paths
    assert "usr/lib/iscsiboot/libexec/iscsistart" in paths
    # the base brings the shell: no busybox of its own, and the scripts run with the base's /bin/sh
    assert "usr/lib/iscsiboot/bin/busybox" not in paths
    scripts = {m.entry.path: m.entry.data for m in cpio.read_newc(raw) if m.entry.path.startswith(BIN_DIR)}
    assert scripts and all(data.startswith(b"#!/bin/sh\n") for data in scripts.values()), sorted(scripts)
    own = f"usr/lib/iscsiboot/modules/{result.kernel_version}"
    assert {p for p in paths if p.startswith(own + "/modules.")} == {
        f"{own}/{name}" for name in ("modules.dep", "modules.alias", "modules.builtin")
    }
    assert f"{own}/kernel/drivers/scsi/iscsi_tcp.ko" in paths
    print(f"overlay zstd: {result.size} bytes")
    noiscsi = build(kernel=test_kernel(), overlay=True, compression="none", iscsistart=False)
    lean = {m.entry.path for m in cpio.read_newc(noiscsi.archive)}
    assert "usr/lib/iscsiboot/libexec/iscsistart" not in lean
    # the base initramfs brings its own e2fsck (LibreELEC's and Debian's do) unless --fsck
    assert "usr/lib/iscsiboot/libexec/e2fsck" not in lean and not any("libext2fs" in p for p in lean)
    checked = build(kernel=test_kernel(), overlay=True, compression="none", fsck=True, busybox=True)
    members = {m.entry.path: m.entry.data for m in cpio.read_newc(checked.archive)}
    assert "usr/lib/iscsiboot/bin/e2fsck" in members
    assert members["usr/lib/iscsiboot/init"].startswith(b"#!/usr/lib/iscsiboot/bin/busybox sh\n")
    assert "usr/lib/iscsiboot/bin/busybox" in members


def test_nbd_image_has_no_kernel_iscsi(tmp_path: Path) -> None:
    kernel = test_kernel()
    result = build(
        kernel=kernel, compression="zstd", transport="nbd", iscsistart=False, output=tmp_path / "n.zst"
    )
    assert not set(result.modules) & set(KERNEL_ISCSI_MODULES), result.modules
    assert "nbd" in result.modules and "sd_mod" not in result.modules
    raw = subprocess.run(["zstd", "-d", "-c", str(result.output)], capture_output=True, check=True).stdout
    paths = {m.entry.path for m in cpio.read_newc(raw)}
    assert not any("iscsi" in Path(p).name for p in paths if p.endswith(".ko"))
    assert "usr/lib/iscsiboot/lib/python3.11/iscsiboot/agent/backends/nbd.pyc" in paths or any(
        "agent/backends/nbd" in w for w in result.warnings
    )
    manifest = json.loads(
        next(m.entry.data for m in cpio.read_newc(raw) if m.entry.path.endswith("initramfs.json"))
    )
    assert manifest["transport"] == "nbd"
    print(f"full nbd zstd: {result.size} bytes")
    with pytest.raises(UsageError):
        build(kernel=kernel, compression="none", transport="nbd", iscsistart=True)


def test_cli_build_json_and_verbose(tmp_path: Path) -> None:
    kernel = test_kernel()
    exe = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "iscsiboot"
    out = tmp_path / "img.cpio"
    common = ["initramfs", "build", "--kernel-root", str(kernel.root), "--compress", "none", "-o", str(out)]
    done = subprocess.run(
        [str(exe), *common, "--json", "--module", "virtio_blk"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["size"] == out.stat().st_size and report["kernel_version"] == kernel.version
    assert "virtio_blk" in report["modules"] and "iscsi_tcp" in report["modules"]
    assert {"python stdlib", "kernel modules", "shared libraries"} <= set(report["groups"])
    verbose = subprocess.run([str(exe), *common, "--verbose"], capture_output=True, text=True, check=False)
    assert verbose.returncode == 0, verbose.stderr
    assert (
        "MiB" in verbose.stdout
        and "largest files:" in verbose.stdout
        and "/usr/lib/iscsiboot/libexec/python3.11" in verbose.stdout
    )
    bad_out = tmp_path / "bad.cpio"
    bad_args = [*common[:-1], str(bad_out), "--module", "no_such_module"]
    bad = subprocess.run([str(exe), *bad_args], capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "no_such_module" in bad.stderr and "Traceback" not in bad.stderr
    assert not bad_out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["img.cpio"]


def test_lean_image_drops_tls_and_unused_modules_and_still_runs_pyroute2(tmp_path: Path) -> None:
    kernel = test_kernel()
    result = build(kernel=kernel, compression="none", lean=True, iscsistart=False, cache=tmp_path / "c")
    paths = {m.entry.path for m in cpio.read_newc(result.archive)}
    assert not any("libssl" in p or "libcrypto" in p or "_ssl." in p or "_hashlib" in p for p in paths)
    dropped = ("_lzma", "_bz2", "liblzma", "libbz2", "udev")  # no xz/bzip2 archives, no pyudev
    assert not any(word in p for p in paths for word in dropped)
    assert "usr/lib/iscsiboot/lib/python3.11/ssl.pyc" in paths  # the stand-in
    for name in ("pdb", "pickle", "multiprocessing"):  # stand-ins in place of the real modules
        assert f"usr/lib/iscsiboot/lib/python3.11/{name}.pyc" in paths
    assert "usr/lib/iscsiboot/lib/python3.11/unittest/mock.pyc" in paths
    gone = ("usr/lib/iscsiboot/lib/python3.11/multiprocessing/", "usr/lib/iscsiboot/lib/python3.11/bdb")
    assert not any(p.startswith(gone) for p in paths)
    assert "usr/lib/iscsiboot/lib/python3.11/unittest/case.pyc" not in paths
    root = tmp_path / "root"
    unpack(result.archive, root)
    script = (
        "import iscsiboot.agent.init, hashlib, asyncio\n"
        "assert hashlib.sha256(b'x').hexdigest().startswith('2d711642')\n"
        "from iscsiboot.agent.startup.pyroute import load_pyroute2\n"
        "load_pyroute2()\n"
        "from pyroute2.iproute.linux import IPRoute\n"
        "from pyroute2.dhcp.client import AsyncDHCPClient\n"
        "import sys\n"
        "tc = 'pyroute2.netlink.rtnl.tcmsg.sched_htb'\n"
        "print('lazy', type(sys.modules[tc]).__name__)\n"  # imported, not run
        "from pyroute2.netlink.rtnl.tcmsg import plugins\n"
        "print('touched', hasattr(plugins['htb'], 'options'), type(sys.modules[tc]).__name__)\n"
        "with IPRoute() as ipr:\n"
        "    print('links', len(ipr.link('dump')))\n"
    )
    done = _inside(root, "/usr/bin/python3.11", "-S", "-c", script)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:2] == ["lazy _LazyModule", "touched True module"]  # tc plugins packed, run on first use
    assert lines[2].startswith("links ")
    print(f"lean without iscsistart: cpio {result.uncompressed} bytes")
