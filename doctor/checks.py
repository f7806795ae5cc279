"""``iscsiboot doctor``: check every link of an iSCSI boot, in the order the box meets them.

portal reachable (TCP) -> discovery lists the target -> login (CHAP, mutual)
-> LUNs present -> capacity -> partition table -> a bootable partition ->
file systems match the System/Storage locators -> System (ext4, or FAT as
LibreELEC's installer writes it) holds KERNEL, SYSTEM and an extlinux.conf or
syslinux.cfg whose APPEND line matches the settings, and on FAT the EFI
loader EFI/BOOT/bootx64.efi.

Each check is a :class:`~iscsiboot.doctor.report.Check` (ok, detail, fix).  When a check fails that the
next ones need (no TCP, no login, no disk), the run stops there.  The doctor
only sends INQUIRY, REPORT LUNS, READ CAPACITY and READ: it never writes.
Details and fixes never hold secrets.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from iscsiboot.cmdline.parse import parse
from iscsiboot.disk.probe import probe_filesystem, read_partition_table
from iscsiboot.doctor.products import Product, identify, identify_any, lun_fix
from iscsiboot.doctor.report import (
    ESP_GUID,
    Check,
    LunReport,
    PartitionReport,
    Report,
    Settings,
    size_text,
)
from iscsiboot.errors import IscsibootError
from iscsiboot.iscsi.login import AuthenticationFailed, LoginFailed
from iscsiboot.iscsi.scsi import Capacity, Inquiry
from iscsiboot.iscsi.session import DEFAULT_TIMEOUT, LunReader, ScsiError, Session
from iscsiboot.iscsi.status import Code
from iscsiboot.iscsi.transport import PortalUnreachable, TransportError, connect
from iscsiboot.model import BootConfig, Locator, LocatorKind, Target, lun_to_text
from iscsiboot.secret import Secret, mask


class _Stop(Exception):
    """A failed check that the later checks depend on."""


@dataclass
class _Run:
    settings: Settings
    timeout: float
    digests: bool = False
    checks: list[Check] = field(default_factory=list)
    luns: list[LunReport] = field(default_factory=list)
    readers: dict[int, LunReader] = field(default_factory=dict)
    tables: dict[int, Any] = field(default_factory=dict)

    def secrets(self) -> tuple[Secret, ...]:
        return self.settings.config.secrets()

    def add(self, name: str, ok: bool, detail: str, fix: str | None = None) -> None:
        hidden = self.secrets()
        self.checks.append(Check(name, ok, mask(detail, hidden), mask(fix, hidden) if fix else None))

    def fail(self, name: str, detail: str, fix: str | None) -> NoReturn:
        self.add(name, False, detail, fix)
        raise _Stop(name)


# ---------------------------------------------------------------- the steps


def _portal(run: _Run) -> None:
    t = run.settings.target
    try:
        connect(t.address, t.port, timeout=run.timeout).close()
    except PortalUnreachable as exc:
        run.fail("portal", exc.what, exc.fix)
    run.add("portal", True, f"{t.portal} accepts TCP connections")


def _discovery(run: _Run) -> None:
    t = run.settings.target
    ini = run.settings.initiator
    try:
        try:
            session = Session.login(t.address, t.port, initiator=ini, timeout=run.timeout)
        except LoginFailed as exc:
            if exc.status.code is not Code.AUTHENTICATION_FAILURE or t.chap is None:
                raise
            session = Session.login(t.address, t.port, initiator=ini, chap=t.chap, timeout=run.timeout)
        with session:
            found = session.send_targets()
    except (IscsibootError, OSError) as exc:
        run.add(
            "discovery",
            False,
            f"the discovery session failed: {exc}",
            "the login below tells more; some targets allow no discovery",
        )
        return
    names = [f.name for f in found]
    if t.name in names:
        run.add("discovery", True, f"SendTargets as {ini} lists {t.name} ({len(names)} target(s) in all)")
        return
    listed = ", ".join(names) if names else "nothing"
    close = difflib.get_close_matches(t.name, names, n=1, cutoff=0.8)
    hint = f" (did you mean {close[0]}?)" if close else ""
    run.add(
        "discovery",
        False,
        f"SendTargets as {ini} does not list {t.name}; it lists {listed}{hint}",
        "correct the target name, or allow this initiator in the target's ACL "
        "(targets hide what an initiator may not see)",
    )


def login_cause(exc: BaseException, target: Target, initiator: str) -> tuple[str, str | None]:
    """(plain-language cause, fix) of a failed login."""
    if isinstance(exc, LoginFailed):
        status = exc.status
        answered = f"the target answered: {status.name}"
        if status.code is Code.AUTHORIZATION_FAILURE:
            return (
                f"{answered} for this initiator name; the target's ACL does "
                f"not include {initiator} (or this address)",
                f"add {initiator} to the ACL of {target.name} on the target, or boot with the initiator name "
                "the ACL names",
            )
        if status.code is Code.AUTHENTICATION_FAILURE:
            who = f"CHAP user {target.chap.username!r}" if target.chap else "no CHAP credentials"
            fix = (
                "give the CHAP user name and secret that the target has for this initiator"
                if target.chap
                else "the target requires CHAP: add the user name and password to the settings"
            )
            if target.chap and target.reverse_chap is None:
                fix += (
                    "; a target set up for mutual CHAP may refuse one-way CHAP (istgt's AuthMethod "
                    "CHAP Mutual does): then add the target's own user name and secret"
                )
            return f"{answered} with {who}", fix
        if status.code is Code.NOT_FOUND:
            return (
                f"the target answered: no target named {target.name} at {target.portal} for this initiator "
                f"name; either the name is wrong or the target's ACL does not include {initiator} "
                "(tgt and istgt answer 'not found' to an initiator their ACL refuses; "
                "LIO answers 'not authorized')",
                f"check the target name against discovery, and that the target's ACL includes {initiator}",
            )
        return f"{answered}: {status.text}", status.fix or None
    if isinstance(exc, AuthenticationFailed):
        return exc.what, exc.fix
    if isinstance(exc, IscsibootError):
        return exc.what, exc.fix
    return str(exc), None


def _login(run: _Run) -> Session:
    t = run.settings.target
    ini = run.settings.initiator
    try:
        session = Session.login(
            t.address,
            t.port,
            initiator=ini,
            target=t.name,
            chap=t.chap,
            reverse_chap=t.reverse_chap,
            timeout=run.timeout,
            digests=run.digests,
        )
    except (IscsibootError, OSError) as exc:
        cause, fix = login_cause(exc, t, ini)
        run.fail("login", cause, fix)
    via = f" via redirect {' -> '.join(session.redirects)}" if session.redirects else ""
    run.add("login", True, f"logged in to {t.name} as {ini} with {session.result.auth} authentication{via}")
    return session


def _luns(run: _Run, session: Session) -> None:
    try:
        numbers = session.report_luns()
    except (IscsibootError, OSError) as exc:
        run.fail("luns", f"REPORT LUNS failed: {exc}", "check the target's LUN configuration")
    for number in numbers:
        try:
            inq: Inquiry = session.inquiry(number)
        except ScsiError:
            continue
        cap: Capacity | None = None
        parts: list[PartitionReport] = []
        scheme = None
        if inq.device_type == 0 and inq.connected:
            try:
                cap = session.read_capacity(number)
            except ScsiError:
                cap = None
        if cap is not None and cap.blocks > 0:
            reader = LunReader(session, number, cap)
            run.readers[number] = reader
            try:
                table = read_partition_table(reader, size=cap.bytes, sector_size=cap.block_size)
            except IscsibootError:
                table = None
            run.tables[number] = table
            if table is not None:
                scheme = table.scheme
                for p in table.partitions:
                    try:
                        fs = probe_filesystem(reader.at(p.start))
                    except IscsibootError:
                        fs = None
                    parts.append(
                        PartitionReport(
                            p.number,
                            p.start,
                            p.size,
                            p.type,
                            p.bootable,
                            fs.fs if fs else None,
                            fs.label if fs else None,
                            fs.uuid if fs else None,
                        )
                    )
        run.luns.append(
            LunReport(
                number,
                inq.vendor,
                inq.product,
                inq.revision,
                inq.type_name,
                cap.bytes if cap else None,
                cap.block_size if cap else None,
                scheme,
                tuple(parts),
            )
        )
    listing = ", ".join(
        f"{lun.lun} ({lun.device_type}{', ' + size_text(lun.capacity_bytes) if lun.capacity_bytes else ''})"
        for lun in run.luns
    )
    disks = [lun for lun in run.luns if lun.device_type == "disk"]
    wanted = run.settings.target.lun
    if wanted is not None:
        if not any(lun.lun == wanted for lun in run.luns):
            run.fail(
                "luns",
                f"LUN {lun_to_text(wanted)} does not exist; the target has LUN {listing}",
                lun_fix(identify_any(lun.vendor for lun in run.luns), (lun.lun for lun in disks)),
            )
        if not any(lun.lun == wanted for lun in disks):
            run.fail(
                "luns",
                f"LUN {lun_to_text(wanted)} is not a disk; the target has LUN {listing}",
                lun_fix(identify_any(lun.vendor for lun in run.luns), (lun.lun for lun in disks)),
            )
    elif not disks:
        run.fail(
            "luns", f"the target has no disk LUN (only {listing or 'nothing'})", "add a disk to the target"
        )
    run.add("luns", True, f"LUN {listing}")


def _boot_lun(run: _Run) -> LunReport:
    wanted = run.settings.target.lun
    disks = [lun for lun in run.luns if lun.device_type == "disk"]
    if wanted is not None:
        return next(lun for lun in disks if lun.lun == wanted)
    for lun in disks:
        if any(_matches(run.settings.system, p) for p in lun.partitions):
            return lun
    return disks[0]


def _capacity(run: _Run, lun: LunReport) -> None:
    if not lun.capacity_bytes or not lun.block_size:
        run.fail("capacity", f"LUN {lun.lun} reports no capacity", "check the backing store of the LUN")
    run.add(
        "capacity",
        True,
        f"LUN {lun.lun}: {lun.vendor} {lun.product}{_named(lun.vendor)}, {size_text(lun.capacity_bytes)} "
        f"({lun.capacity_bytes} bytes, {lun.block_size}-byte blocks)",
    )


def _named(vendor: str) -> str:
    product = identify(vendor)
    return "" if product is Product.UNKNOWN else f" ({product.value})"


def _table(run: _Run, lun: LunReport) -> None:
    if lun.scheme is None:
        run.fail(
            "partition table",
            f"LUN {lun.lun} has no MBR or GPT partition table",
            "partition it (iscsiboot install), or check that the LUN is the boot disk",
        )
    run.add(
        "partition table",
        True,
        f"LUN {lun.lun}: {lun.scheme.upper()} with {len(lun.partitions)} partition(s)",
    )


def _bootable(run: _Run, lun: LunReport) -> None:
    marked = [p for p in lun.partitions if p.bootable or p.type.lower() == ESP_GUID]
    if not marked:
        run.fail(
            "bootable partition",
            f"no partition on LUN {lun.lun} is marked bootable",
            "mark the System partition bootable (sfdisk --activate DISK N)",
        )
    run.add("bootable partition", True, "bootable: partition " + ", ".join(str(p.number) for p in marked))


def _matches(locator: Locator, p: PartitionReport) -> bool:
    if locator.kind is LocatorKind.LABEL:
        return p.label == locator.value
    if locator.kind is LocatorKind.UUID:
        return p.uuid is not None and p.uuid.lower() == locator.value.lower()
    return False


def _find(run: _Run, locator: Locator) -> list[tuple[LunReport, PartitionReport]]:
    return [(lun, p) for lun in run.luns for p in lun.partitions if _matches(locator, p)]


def _filesystems(run: _Run) -> tuple[LunReport, PartitionReport] | None:
    settings = run.settings
    notes: list[str] = []
    problems: list[tuple[str, str]] = []
    system_at: tuple[LunReport, PartitionReport] | None = None
    for role, locator in (("System", settings.system), ("Storage", settings.storage)):
        if locator is None:
            continue
        if locator.kind is LocatorKind.PATH:
            notes.append(f"{role} is the device path {locator}, which cannot be checked from here")
            continue
        hits = _find(run, locator)
        if len(hits) == 1:
            lun, part = hits[0]
            notes.append(f"{role} {locator} is LUN {lun.lun} partition {part.number} ({part.fs})")
            if role == "System":
                system_at = hits[0]
        elif len(hits) > 1:
            problems.append(
                (f"{len(hits)} file systems match {role} {locator}", "give each file system a unique label")
            )
        elif role == "Storage" and not settings.config.storage_on_iscsi and settings.source != "options":
            notes.append(f"Storage {locator} is not on this target (expected on a local disk)")
        elif role == "Storage" and len(settings.config.targets) > 1:
            other = settings.config.targets[1]
            notes.append(
                f"Storage {locator} is on the second target {other.name}, which this run does not open"
            )
        else:
            seen = sorted(
                {
                    f"{p.fs} {p.label or '(no label)'} {p.uuid or ''}".strip()
                    for lun in run.luns
                    for p in lun.partitions
                }
            )
            problems.append(
                (
                    f"no file system matches {role} {locator}; found: {', '.join(seen) or 'none'}",
                    f"label the {role} file system (e2label DEVICE {locator.value}) or correct the setting",
                )
            )
    if problems:
        run.add("file systems", False, "; ".join(p for p, _ in problems) + _also(notes), problems[0][1])
        return system_at
    run.add("file systems", True, "; ".join(notes) or "no locators to check")
    return system_at


def _also(notes: list[str]) -> str:
    return f" ({'; '.join(notes)})" if notes else ""


def compare_append(
    expected: Settings, append: str, same_fs: Callable[[Locator, Locator], bool] | None = None
) -> list[str]:
    """Differences between the APPEND line found on System and the settings (no secrets).

    ``same_fs`` says whether two different locators name the same file system
    (``LABEL=System`` and that file system's ``UUID=``), which is no difference.
    """
    try:
        found = parse(append).config
    except IscsibootError as exc:
        return [f"the APPEND line does not parse: {exc}"]
    want = expected.config
    diffs: list[str] = []
    if found.firmware and not found.targets:
        if expected.source != "ibft" and not want.firmware:
            diffs.append("the APPEND line takes the target from the iBFT, the settings name one directly")
        return diffs
    if found.target_from_dhcp and not expected.from_dhcp:
        diffs.append(
            "the APPEND line takes the target from the DHCP root path, the settings name one directly"
        )
    elif not found.targets and not found.target_from_dhcp:
        return ["the APPEND line names no iSCSI target"]
    if want.targets and found.targets:
        a, b = want.targets[0], found.targets[0]
        for what, x, y in (
            ("target name", a.name, b.name),
            ("portal", a.portal, b.portal),
        ):
            if x != y:
                diffs.append(f"{what}: settings {x}, APPEND {y}")
        if a.lun is not None and b.lun is not None and a.lun != b.lun:
            diffs.append(f"LUN: settings {lun_to_text(a.lun)}, APPEND {lun_to_text(b.lun)}")
        for what, ca, cb in (("CHAP", a.chap, b.chap), ("reverse CHAP", a.reverse_chap, b.reverse_chap)):
            if (ca is None) != (cb is None):
                diffs.append(
                    f"{what}: {'set' if ca else 'none'} in the settings, {'set' if cb else 'none'} in APPEND"
                )
            elif ca is not None and cb is not None:
                if ca.username != cb.username:
                    diffs.append(f"{what} user: settings {ca.username}, APPEND {cb.username}")
                if ca.password != cb.password:
                    diffs.append(f"{what} secret differs (not shown)")
    if want.initiator and found.initiator and want.initiator != found.initiator:
        diffs.append(f"initiator: settings {want.initiator}, APPEND {found.initiator}")
    for role, wx, fy in (("System", want.system, found.system), ("Storage", want.storage, found.storage)):
        if wx is not None and fy is not None and str(wx) != str(fy) and not (same_fs and same_fs(wx, fy)):
            diffs.append(f"{role}: settings {wx}, APPEND {fy}")
    return diffs


def _same_fs(run: _Run, a: Locator, b: Locator) -> bool:
    hits_a, hits_b = _find(run, a), _find(run, b)
    return len(hits_a) == 1 and hits_a == hits_b


def _system_files(run: _Run, at: tuple[LunReport, PartitionReport] | None) -> None:
    # The file system readers load here, not with the module: the boot agent's login
    # diagnosis (explain_login) stops at the login check and its initramfs leaves them out.
    from iscsiboot.disk.esp import EFI_LOADER  # noqa: PLC0415
    from iscsiboot.disk.fat import open_filesystem  # noqa: PLC0415
    from iscsiboot.disk.inspect import SYSTEM_FS, conf_names, parse_extlinux  # noqa: PLC0415

    if at is None:
        run.fail("system files", "the System file system was not found", "see the file systems check")
    lun, part = at
    if part.fs not in SYSTEM_FS:
        run.fail(
            "system files",
            f"System is {part.fs}, which this check cannot read",
            "format System as FAT16 (iscsiboot install) or ext4",
        )
    fat = part.fs == "vfat"
    reader = run.readers[lun.lun].at(part.start)
    try:
        fs = open_filesystem(reader, part.fs or "")
        missing = [name for name in ("KERNEL", "SYSTEM") if not fs.exists(f"/{name}")]
        conf_path = next((p for p in conf_names(part.fs or "") if fs.exists(p)), None)
        text = fs.read_file(conf_path, limit=1 << 20).decode("utf-8", "replace") if conf_path else None
        efi = fs.exists(EFI_LOADER) if fat else False
    except IscsibootError as exc:
        run.fail("system files", f"System cannot be read: {exc}", "run fsck on the System file system")
    problems: list[str] = [f"/{name} is missing" for name in missing]
    fixes: list[str] = [f"copy {name} to System" for name in missing]
    if fat and not efi:
        problems.append(f"{EFI_LOADER} is missing, so System does not boot under UEFI")
        fixes.append(f"copy syslinux.efi to System{EFI_LOADER} (iscsiboot install --layout libreelec does)")
    append = None
    conf_name = "syslinux.cfg" if fat else "extlinux.conf"
    if conf_path is None or text is None:
        problems.append(f"there is no {conf_name}")
        fixes.append(f"write {conf_name} (iscsiboot generate extlinux)")
    else:
        entry = parse_extlinux(text).entry()
        append = entry.append if entry else None
        if append is None:
            problems.append(f"{conf_path} has no APPEND line")
            fixes.append("add an APPEND line with the boot settings")
        else:
            diffs = compare_append(run.settings, append, lambda a, b: _same_fs(run, a, b))
            if diffs:
                problems.append(
                    f"the APPEND line of {conf_path} differs from the settings: " + "; ".join(diffs)
                )
                fixes.append(f"make {conf_path}'s APPEND line match (iscsiboot generate extlinux)")
    if problems:
        run.add("system files", False, "on System: " + "; ".join(problems), "; ".join(fixes))
        return
    loader = f", {EFI_LOADER} (UEFI)" if fat else ""
    run.add(
        "system files",
        True,
        f"System ({part.fs}) has KERNEL, SYSTEM{loader} and {conf_path}, "
        "whose APPEND line matches the settings",
    )


# ---------------------------------------------------------------- runners


def run_checks(
    settings: Settings, *, timeout: float = DEFAULT_TIMEOUT, upto: str | None = None, digests: bool = False
) -> Report:
    """Run the plan in order (up to and including ``upto``); never raises for what it finds.

    ``digests``: the session that reads the LUN asks for CRC32C header and data digests."""
    if not settings.config.targets:
        raise IscsibootError("the settings name no iSCSI target", fix="give --portal and --target")
    run = _Run(settings, timeout, digests)
    complete = True
    session: Session | None = None
    try:
        _portal(run)
        if upto == "portal":
            return _report(run, True)
        _discovery(run)
        if upto == "discovery":
            return _report(run, True)
        session = _login(run)
        if upto == "login":
            return _report(run, True)
        try:
            _luns(run, session)
            lun = _boot_lun(run)
            _capacity(run, lun)
            _table(run, lun)
            _bootable(run, lun)
            at = _filesystems(run)
            _system_files(run, at)
        except (TransportError, IscsibootError, OSError) as exc:
            if isinstance(exc, _Stop):
                raise
            run.add("session", False, f"the session broke: {exc}", "check the network and the target's log")
            complete = False
    except _Stop:
        complete = False
    finally:
        if session is not None:
            try:
                session.logout()
            except (IscsibootError, OSError):
                session.close()
    return _report(run, complete)


def _report(run: _Run, complete: bool) -> Report:
    s = run.settings
    return Report(s.target.name, s.target.portal, s.initiator, tuple(run.checks), tuple(run.luns), complete)


def explain_login(target: Target, initiator: str, *, timeout: float) -> str:
    """One paragraph, in plain language, on why a login to ``target`` fails (or that it works).

    For the boot agent after a failed login: it checks the portal, discovery
    and the login itself.  No secrets appear in the text.
    """
    settings = Settings(BootConfig(initiator=initiator, targets=(target,)), source="agent")
    report = run_checks(settings, timeout=timeout, upto="login")
    sentences: list[str] = []
    for check in report.checks:
        if check.ok:
            if check.name == "portal":
                sentences.append(f"The portal {target.portal} answers.")
            elif check.name == "discovery":
                sentences.append(f"Discovery lists {target.name} for {initiator}.")
            elif check.name == "login":
                sentences.append(f"A test login to {target.name} as {initiator} works now ({check.detail}).")
        else:
            text = check.detail[0].upper() + check.detail[1:]
            sentences.append(text.rstrip(".") + ".")
            if check.fix:
                sentences.append(f"Fix: {check.fix.rstrip('.')}.")
    return mask(" ".join(sentences), target.secrets())
