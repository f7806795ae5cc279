"""Where an iBFT comes from: a file, ACPI, low memory, or the kernel's sysfs view.

Thin I/O around :mod:`iscsiboot.ibft.parse`.  Every failure is an
:class:`~iscsiboot.errors.IscsibootError` that says what was read and why it
did not give a table: :class:`~iscsiboot.errors.TableError` (exit 2) for a
table that is there but invalid, :class:`~iscsiboot.errors.EnvironmentProblem`
(exit 1) for a source that is missing or not readable.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from iscsiboot.errors import EnvironmentProblem, IscsibootError, TableError
from iscsiboot.files import PAGE, read_bytes
from iscsiboot.ibft.codec import pci_parse
from iscsiboot.ibft.parse import parse_table
from iscsiboot.ibft.types import HEADER_SIZE, IbftTarget, Initiator, Nic, Parsed, Table
from iscsiboot.secret import Secret

# Signatures, in the order Linux's ACPI lookup tries them.
ACPI_SIGNATURES = ("IBFT", "iBFT", "BIFT")
# The legacy scan (arch/x86 reserve_ibft_region) compares these.
SCAN_SIGNATURES = (b"iBFT", b"BIFT")
SCAN_START = 0x80000
SCAN_END = 0x100000
VGA_START = 0xA0000
VGA_END = 0xC0000
SCAN_STEP = 16
SYSFS_ROOT = "/sys/firmware/ibft"
ACPI_TABLES = "sys/firmware/acpi/tables"


@dataclass(frozen=True)
class Found:
    """A parsed table and a description of where it came from."""

    parsed: Parsed
    source: str


MAX_READ = 0x100000  # no iBFT is longer than its 16-bit offsets reach; 1 MiB is plenty


def _read(path: Path, what: str, *, skip: int = 0, size: int = MAX_READ, devices: bool = False) -> bytes:
    """At most ``size`` bytes from ``skip`` on, of a regular file (or with ``devices``, a device)."""
    try:
        return read_bytes(path, size, where=f"{what} {path}", devices=devices, truncate=True, offset=skip)
    except FileNotFoundError:
        raise EnvironmentProblem(f"{what} {path} does not exist") from None
    except PermissionError:
        raise EnvironmentProblem(f"{what} {path} is readable only by root", fix="run as root") from None
    except IsADirectoryError:
        raise EnvironmentProblem(f"{what} {path} is a directory, not a file") from None
    except OSError as exc:
        raise EnvironmentProblem(f"cannot read {what} {path}: {exc.strerror}") from None


def read_file(path: str | os.PathLike[str], *, lenient: bool = False) -> Found:
    """A raw table file (for example a copy of /sys/firmware/acpi/tables/iBFT)."""
    p = Path(path)
    data = _read(p, "table file")
    return Found(_parse_at(data, lenient, f"{p}"), f"table file {p}")


def _parse_at(data: bytes, lenient: bool, where: str) -> Parsed:
    try:
        return parse_table(data, lenient=lenient)
    except TableError as exc:
        located = f"{where}: {exc.where}" if exc.where else where
        raise TableError(exc.what, where=located, fix=exc.fix) from None


def acpi_candidates(root: str | os.PathLike[str] = "/") -> list[Path]:
    """The iBFT files under <root>/sys/firmware/acpi/tables, in Linux's order (numbered ones last)."""
    tables = Path(root) / ACPI_TABLES
    try:
        names = sorted(os.listdir(tables))
    except OSError:
        return []
    out = [tables / s for s in ACPI_SIGNATURES if s in names]
    for sig in ACPI_SIGNATURES:
        numbered = [n for n in names if re.fullmatch(re.escape(sig) + r"[0-9]+", n)]
        out += [tables / n for n in sorted(numbered, key=lambda n: int(n[len(sig) :]))]
    return out


def read_acpi(root: str | os.PathLike[str] = "/", *, lenient: bool = False) -> Found:
    """The first iBFT (IBFT, iBFT, BIFT, then numbered copies) that ACPI publishes."""
    candidates = acpi_candidates(root)
    if not candidates:
        raise EnvironmentProblem(
            f"no iBFT among the ACPI tables in {Path(root) / ACPI_TABLES}",
            fix="BIOS firmware such as iPXE puts it in low memory instead: try --source devmem or sysfs",
        )
    first_error: IscsibootError | None = None
    for path in candidates:
        try:
            found = read_file(path, lenient=lenient)
        except IscsibootError as exc:
            first_error = first_error or exc
            continue
        return Found(found.parsed, f"ACPI table {path}")
    assert first_error is not None
    raise first_error


def scan_positions(base: int, size: int) -> list[int]:
    """Physical addresses the legacy scan looks at that lie inside [base, base + size)."""
    return [pos for pos in range(SCAN_START, SCAN_END, SCAN_STEP) if _scanned(pos, base, size)]


def _scanned(pos: int, base: int, size: int) -> bool:
    return (
        SCAN_START <= pos < SCAN_END
        and (pos - SCAN_START) % SCAN_STEP == 0
        and not VGA_START <= pos < VGA_END
        and base <= pos
        and pos + 8 <= base + size
    )


def signature_positions(data: bytes, base: int = 0) -> list[int]:
    """The scanned addresses whose four bytes are an iBFT signature, in address order.

    The same as testing every :func:`scan_positions` address, but the search
    for the signatures runs in C (the legacy window is half a megabyte).
    """
    found: list[int] = []
    for signature in SCAN_SIGNATURES:
        at = data.find(signature)
        while at >= 0:
            if _scanned(base + at, base, len(data)):
                found.append(base + at)
            at = data.find(signature, at + 1)
    return sorted(found)


def scan_memory(data: bytes, base: int = 0, *, lenient: bool = False) -> tuple[Parsed, int]:
    """Find the iBFT in a memory image that starts at physical address ``base``.

    Like Linux: 0x80000-0xFFFFF in 16-byte steps, skipping the VGA hole
    0xA0000-0xBFFFF, signature ``iBFT`` or ``BIFT``, and the table must end
    below 1 MiB.  The first candidate that parses wins; if none does, the
    first candidate's error is raised.
    """
    first_error: TableError | None = None
    for pos in signature_positions(data, base):
        at = pos - base
        length = int.from_bytes(data[at + 4 : at + 8], "little")
        if pos + length > SCAN_END - 1:
            continue
        try:
            return _parse_at(data[at : at + max(length, HEADER_SIZE)], lenient, f"memory 0x{pos:x}"), pos
        except TableError as exc:
            first_error = first_error or exc
    if first_error is not None:
        raise first_error
    raise EnvironmentProblem(
        f"no iBFT signature in memory 0x{SCAN_START:x}-0x{SCAN_END - 1:x} "
        f"(data covers 0x{base:x}-0x{base + len(data) - 1:x})",
        fix="the firmware may publish it through ACPI instead, or not at all",
    )


def read_memory_dump(path: str | os.PathLike[str], base: int = 0, *, lenient: bool = False) -> Found:
    p = Path(path)
    if base < 0:
        raise TableError(f"base address {base} is negative", where="--base")
    start = max(base, SCAN_START)  # read only the scanned window of a large dump
    if start >= SCAN_END:
        raise TableError(
            f"the dump starts at 0x{base:x}, above the scanned range 0x{SCAN_START:x}-0x{SCAN_END - 1:x}",
            where="--base",
        )
    data = _read(p, "memory dump", skip=start - base, size=SCAN_END - start, devices=True)
    parsed, pos = scan_memory(data, start, lenient=lenient)
    return Found(parsed, f"memory dump {p} at 0x{pos:x}")


def read_devmem(path: str | os.PathLike[str] = "/dev/mem", *, lenient: bool = False) -> Found:
    """Scan low memory through /dev/mem (root; the VGA hole is not read)."""
    p = Path(path)
    image = bytearray(SCAN_END - SCAN_START)
    try:
        for start, end in ((SCAN_START, VGA_START), (VGA_END, SCAN_END)):
            chunk = read_bytes(p, end - start, devices=True, truncate=True, offset=start)
            image[start - SCAN_START : start - SCAN_START + len(chunk)] = chunk
    except FileNotFoundError:
        raise EnvironmentProblem(f"{p} does not exist") from None
    except PermissionError:
        raise EnvironmentProblem(
            f"{p} is not readable", fix="run as root; a locked-down kernel (Secure Boot) refuses it always"
        ) from None
    except OSError as exc:
        raise EnvironmentProblem(f"cannot read {p}: {exc.strerror}") from None
    parsed, pos = scan_memory(bytes(image), SCAN_START, lenient=lenient)
    return Found(parsed, f"legacy BIOS memory {p} at 0x{pos:x}")


# ---------------------------------------------------------------- the kernel's view


class _Sysfs:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.warnings: list[str] = []

    def read(self, rel: str) -> str | None:
        path = self.root / rel
        try:
            raw = read_bytes(path, PAGE)  # an attribute is at most a page: anything else is not one
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EPERM):
                raise EnvironmentProblem(
                    f"reading {path} was refused: the kernel shows iBFT attributes only to root "
                    "(CAP_SYS_ADMIN), even though the files are world-readable",
                    fix="run as root",
                ) from None
            raise EnvironmentProblem(f"cannot read {path}: {exc.strerror}") from None
        text = raw.decode("utf-8", errors="surrogateescape")
        return text[:-1] if text.endswith("\n") else text

    def need(self, rel: str) -> str:
        value = self.read(rel)
        if value is None:
            raise TableError("attribute missing", where=str(self.root / rel))
        return value

    def number(self, rel: str, default: int | None = None, *, limit: int = 0xFF) -> int:
        value = self.read(rel) if default is not None else self.need(rel)
        if value is None:
            assert default is not None
            return default
        if not re.fullmatch(r"[0-9]{1,6}", value) or int(value) > limit:
            raise TableError(f"{value!r} is not a number 0-{limit}", where=str(self.root / rel))
        return int(value)

    def ip(self, rel: str) -> str | None:
        value = self.read(rel)
        if value is None:
            return None
        try:
            ip = ipaddress.ip_address(value)
        except ValueError:
            raise TableError(f"{value!r} is not an IP address", where=str(self.root / rel)) from None
        if ip.version == 6 and int(ip) == 0:
            return None
        return str(ip)


def lun_from_sysfs(text: str) -> tuple[bytes, bool]:
    """The 8 LUN bytes behind the kernel's unpadded ``%x`` per byte; and whether that was unambiguous.

    Each byte prints as one hex digit (< 0x10) or two (the first not 0).  When
    several splits fit, the one that puts the two-digit bytes first is used
    (SAM puts the significant byte of a level first).
    """
    text = text.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{8,16}", text):
        raise ValueError(text)
    solutions: list[bytes] = []

    def walk(rest: str, acc: list[int]) -> None:
        if len(solutions) > 64:
            return
        if len(acc) == 8:
            if not rest:
                solutions.append(bytes(acc))
            return
        if len(rest) < 8 - len(acc) or len(rest) > 2 * (8 - len(acc)):
            return
        if len(rest) >= 2 and rest[0] != "0":
            walk(rest[2:], [*acc, int(rest[:2], 16)])
        walk(rest[1:], [*acc, int(rest[0], 16)])

    walk(text, [])
    if not solutions:
        raise ValueError(text)
    return solutions[0], len(solutions) == 1


def _dirs(root: Path, prefix: str) -> list[tuple[int, str]]:
    out = []
    for name in os.listdir(root):
        m = re.fullmatch(re.escape(prefix) + r"([0-9]+)", name)
        if m:
            out.append((int(m.group(1)), name))
    return sorted(out)


def read_sysfs_parsed(root: str | os.PathLike[str] = SYSFS_ROOT, *, laid_out: bool = True) -> Parsed:
    """Rebuild a table from the kernel's /sys/firmware/ibft view.

    ``laid_out``: with iPXE's offsets and checksum (the bytes iPXE would have
    written).  The boot agent needs only the values, so it skips the layout,
    which builds the table with construct (about 0.3 s of imports in a slow guest).
    """
    try:
        return _read_sysfs(Path(root), laid_out=laid_out)
    except PermissionError as exc:
        raise EnvironmentProblem(
            f"reading {exc.filename or root} was refused: the kernel shows iBFT attributes only to root "
            "(CAP_SYS_ADMIN)",
            fix="run as root",
        ) from None


def _read_sysfs(base: Path, *, laid_out: bool) -> Parsed:
    if not base.is_dir():
        raise EnvironmentProblem(
            f"{base} does not exist",
            fix="load the iscsi_ibft module (modprobe iscsi_ibft); without an iBFT the kernel shows nothing",
        )
    s = _Sysfs(base)
    initiator = None
    if (base / "initiator").is_dir():
        initiator = Initiator(
            index=s.number("initiator/index"),
            flags=s.number("initiator/flags"),
            isns_server=s.ip("initiator/isns-server"),
            slp_server=s.ip("initiator/slp-server"),
            pri_radius_server=s.ip("initiator/pri-radius-server"),
            sec_radius_server=s.ip("initiator/sec-radius-server"),
            name=s.read("initiator/initiator-name") or None,
        )
    nics = []
    for _n, d in _dirs(base, "ethernet"):
        prefix_len = s.read(f"{d}/prefix-len") is not None
        prefix: int | None = None
        if not prefix_len and (mask := s.read(f"{d}/subnet-mask")) is not None:
            try:
                prefix = ipaddress.IPv4Network(f"0.0.0.0/{mask}").prefixlen
            except ValueError:
                raise TableError(f"{mask!r} is not a netmask", where=str(base / d / "subnet-mask")) from None
        pci = 0
        device = base / d / "device"
        if device.is_symlink():
            try:
                pci = pci_parse(os.path.basename(os.readlink(device)))
            except ValueError:
                s.warnings.append(f"{d}/device: {os.readlink(device)!r} is not a PCI address in domain 0")
        else:
            s.warnings.append(f"{d}: no device link, so the PCI location is unknown (written as 00:00.0)")
        mac = s.need(f"{d}/mac").lower()
        if not re.fullmatch(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", mac):
            raise TableError(f"{mac!r} is not a MAC address", where=str(base / d / "mac"))
        nics.append(
            Nic(
                index=s.number(f"{d}/index"),
                flags=s.number(f"{d}/flags"),
                ip_address=s.ip(f"{d}/ip-addr"),
                prefix=s.number(f"{d}/prefix-len", 0) if prefix_len else (prefix or 0),
                origin=s.number(f"{d}/origin"),
                gateway=s.ip(f"{d}/gateway"),
                primary_dns=s.ip(f"{d}/primary-dns"),
                secondary_dns=s.ip(f"{d}/secondary-dns"),
                dhcp=s.ip(f"{d}/dhcp"),
                vlan=s.number(f"{d}/vlan", 0, limit=0xFFFF),
                mac=mac.lower(),
                pci_bdf=pci,
                hostname=s.read(f"{d}/hostname"),
            )
        )
    targets = []
    for _n, d in _dirs(base, "target"):
        lun_text = s.need(f"{d}/lun")
        try:
            lun, exact = lun_from_sysfs(lun_text)
        except ValueError:
            raise TableError(
                f"{lun_text!r} is not the kernel's LUN format", where=str(base / d / "lun")
            ) from None
        if not exact:
            s.warnings.append(
                f"{d}/lun: {lun_text!r} fits several byte sequences (the kernel prints each byte "
                f"without zero padding); read as {lun.hex(' ')}"
            )
        chap_secret = s.read(f"{d}/chap-secret")
        rev_secret = s.read(f"{d}/rev-chap-name-secret")
        targets.append(
            IbftTarget(
                index=s.number(f"{d}/index"),
                flags=s.number(f"{d}/flags"),
                address=s.ip(f"{d}/ip-addr"),
                port=s.number(f"{d}/port", limit=0xFFFF),
                lun=lun,
                chap_type=s.number(f"{d}/chap-type"),
                nic_assoc=s.number(f"{d}/nic-assoc"),
                name=s.read(f"{d}/target-name") or None,
                chap_name=s.read(f"{d}/chap-name") or None,
                chap_secret=Secret(chap_secret) if chap_secret else None,
                rev_chap_name=s.read(f"{d}/rev-chap-name") or None,
                rev_chap_secret=Secret(rev_secret) if rev_secret else None,
            )
        )
    if initiator is None and not nics and not targets:
        raise TableError("the kernel shows no initiator, NIC or target", where=str(base))
    table = Table(
        signature=s.read("acpi_header/signature") or "iBFT",
        oem_id=s.read("acpi_header/oem_id") or "",
        oem_table_id=s.read("acpi_header/oem_table_id") or "",
        initiator=initiator,
        nics=tuple(nics),
        targets=tuple(targets),
    )
    if not laid_out:
        return Parsed(table, tuple(s.warnings))
    from iscsiboot.ibft.build import layout  # noqa: PLC0415  (not on the boot agent's way: laid_out=False)

    return Parsed(layout(table), tuple(s.warnings))


def read_sysfs(root: str | os.PathLike[str] = SYSFS_ROOT) -> Table:
    return read_sysfs_parsed(root).table


def read_sysfs_found(root: str | os.PathLike[str] = SYSFS_ROOT, *, laid_out: bool = True) -> Found:
    return Found(read_sysfs_parsed(root, laid_out=laid_out), f"kernel view {root}")


# ---------------------------------------------------------------- auto


def find_auto(root: str | os.PathLike[str] = "/", *, lenient: bool = False) -> Found:
    """ACPI, then the legacy scan of /dev/mem, then /sys/firmware/ibft: the first that gives a table."""
    base = Path(root)
    tried: list[tuple[str, IscsibootError]] = []
    attempts: tuple[tuple[str, Callable[[], Found]], ...] = (
        ("ACPI", lambda: read_acpi(base, lenient=lenient)),
        ("/dev/mem", lambda: read_devmem(base / "dev/mem", lenient=lenient)),
        ("sysfs", lambda: read_sysfs_found(base / SYSFS_ROOT.lstrip("/"))),
    )
    for name, attempt in attempts:
        try:
            return attempt()
        except IscsibootError as exc:
            tried.append((name, exc))
    summary = "; ".join(f"{name}: {exc}" for name, exc in tried)
    invalid = [exc for _name, exc in tried if isinstance(exc, TableError)]
    if invalid:
        raise TableError(f"no valid iBFT found ({summary})")
    raise EnvironmentProblem(f"no iBFT found ({summary})")


def read_auto(root: str | os.PathLike[str] = "/") -> tuple[Table, str]:
    """The table from the first source that has one, and which source that was."""
    found = find_auto(root)
    return found.parsed.table, found.source


__all__ = [
    "Found",
    "acpi_candidates",
    "find_auto",
    "lun_from_sysfs",
    "read_acpi",
    "read_auto",
    "read_devmem",
    "read_file",
    "read_memory_dump",
    "read_sysfs",
    "read_sysfs_parsed",
    "scan_memory",
    "scan_positions",
]
