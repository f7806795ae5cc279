"""Small fake LibreELEC releases, in the two shapes people download (never a real one).

``make_release_tar``: ``LibreELEC-Test.x86_64-0.0.1/target/{KERNEL,SYSTEM}`` with
their ``.md5`` files (md5sum lines).  ``make_release_img``: an ``.img.gz``
holding the installer's layout (GPT, FAT System with KERNEL, SYSTEM and their
``.md5`` files, ext4 Storage), built with ``iscsiboot install --image``.

Run as a script to write both into a folder: ``python tests/release_support.py DIR``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from iscsiboot.disk.install import install_image
from iscsiboot.disk.layout import LayoutKind

NAME = "LibreELEC-Test.x86_64-0.0.1"


def md5_line(data: bytes, name: str) -> bytes:
    return f"{hashlib.md5(data, usedforsecurity=False).hexdigest()}  {name}\n".encode()


def fake_files(seed: int = 1) -> tuple[bytes, bytes]:
    """A KERNEL and a SYSTEM that look like their kinds at the start (not bootable)."""
    kernel = b"MZ" + bytes(510) + b"fake kernel %d\n" % seed * 2000
    system = b"hsqs" + bytes(4092) + bytes(range(256)) * 400
    return kernel, system


def add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    archive.addfile(info, io.BytesIO(data))


def make_release_tar(folder: Path, kernel: bytes, system: bytes, *, bad_md5: str | None = None) -> Path:
    """``folder/NAME.tar``; ``bad_md5="SYSTEM"`` makes that file's .md5 name another digest."""
    path = folder / f"{NAME}.tar"
    with tarfile.open(path, "w") as archive:
        for name, data in (("KERNEL", kernel), ("SYSTEM", system)):
            add(archive, f"{NAME}/target/{name}", data)
            line = md5_line(data + b"x" if name == bad_md5 else data, f"target/{name}")
            add(archive, f"{NAME}/target/{name}.md5", line)
        add(archive, f"{NAME}/README.md", b"a fake release for tests\n")
    return path


def make_release_img(folder: Path, kernel: bytes, system: bytes, *, size_mb: int = 48) -> Path:
    """``folder/NAME.img.gz`` with the installer's layout, and ``NAME.img.gz.md5`` beside it."""
    work = folder / "img-work"
    work.mkdir(exist_ok=True)
    (work / "KERNEL").write_bytes(kernel)
    (work / "SYSTEM").write_bytes(system)
    image = work / f"{NAME}.img"
    install_image(image, kernel=work / "KERNEL", system=work / "SYSTEM", append="quiet", size_mb=size_mb,
                  system_size_mb=16, layout=LayoutKind.LIBREELEC)  # fmt: skip
    mcopy = shutil.which("mcopy") or "mcopy"
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    for name, data in (("KERNEL", kernel), ("SYSTEM", system)):
        sums = work / f"{name}.md5"
        sums.write_bytes(md5_line(data, f"target/{name}"))
        subprocess.run([mcopy, "-i", f"{image}@@{8192 * 512}", str(sums), f"::/{name}.md5"], env=env,
                       check=True, capture_output=True)  # fmt: skip
    path = folder / f"{NAME}.img.gz"
    with open(image, "rb") as source, gzip.open(path, "wb", compresslevel=1) as out:
        shutil.copyfileobj(source, out)
    (folder / f"{path.name}.md5").write_bytes(md5_line(path.read_bytes(), path.name))
    shutil.rmtree(work)
    return path


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: release_support.py DIR\n")
        return 2
    folder = Path(argv[0])
    folder.mkdir(parents=True, exist_ok=True)
    kernel, system = fake_files()
    print(make_release_tar(folder, kernel, system))
    print(make_release_img(folder, kernel, system))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
