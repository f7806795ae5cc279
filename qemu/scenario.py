"""Boot scenarios as pure plans: options in, QEMU argv, APPEND line, target and iPXE script out.

A :class:`ScenarioOptions` says what to boot and which fault to inject; the
function :func:`plan` turns it (with the target's port and a work folder)
into a :class:`Plan`: everything the runner needs, computed without touching
the machine, so every scenario is unit-testable without QEMU.

Modes:

``ibft``
    QEMU's user-mode network gives DHCP and TFTP; the NIC's iPXE ROM runs the
    generated script, ``sanboot`` logs in to the target and boots the LUN's
    MBR/extlinux, which starts the kernel with ``boot=ISCSI=auto``.  iPXE
    leaves the iBFT in low memory and the agent reads it.
``ibft`` with ``acpi_ibft``
    No iPXE: a direct kernel boot with the table (built from the model)
    injected through ``-acpitable``; the agent finds it in the ACPI tables.
``cmdline``
    A direct kernel boot with explicit ``boot=ISCSI=iscsi_initiator=...``
    options and ``ip=dhcp``; no iBFT at all.
``dhcp``
    A direct kernel boot with dracut's ``netroot=dhcp``: the target is the
    root path (option 17) that a real dnsmasq sends, with the configuration
    ``iscsiboot generate dnsmasq`` writes (``no_root_path``: without that
    line).  Guest, dnsmasq and tgtd share a network namespace of their own
    (:mod:`iscsiboot.qemu.netlab`): the guest's tap is on a bridge that holds
    the server's address, 10.77.0.1, and the target listens there on 3260.

How the guest reaches iPXE in ``ibft`` mode (:class:`BootVia`):

``rom``
    iPXE in the NIC's option ROM, QEMU's user-mode DHCP and TFTP.
``dnsmasq``
    The PXE chain of a real network, in the dhcp mode's namespace: the
    firmware's own PXE client asks dnsmasq (running ``iscsiboot generate
    dnsmasq``'s configuration) for a boot file and gets Debian's prebuilt
    ``undionly.kpxe`` or ``ipxe.efi`` over TFTP; that iPXE asks again, is
    recognised as iPXE and gets the script.  Under UEFI the NIC has no ROM
    at all: OVMF's own PXE client starts the chain.  SeaBIOS has no PXE
    client of its own, and every PXE ROM QEMU ships for its NICs is an iPXE
    build, so under BIOS the NIC's ROM is the PXE client; it announces
    itself as iPXE and gets the script directly.  dnsmasq cannot tell that
    ROM from the ``undionly.kpxe`` it would chain: both are Debian's iPXE
    1.0.0+git-20190125, option 175 holds the same feature list and the same
    bus id (``undionly`` reports the PXE stack's PCI vendor and device), and
    their DHCP requests, captured, are the same bytes but for the
    transaction id and the BOOTP broadcast flag, which dnsmasq cannot match.
``usb``
    The boot stick of ``iscsiboot generate usb`` (Debian's ``ipxe.lkrn``
    started by syslinux, the embedded script with its own DHCP) as a USB
    disk, on a NIC without a boot ROM; BIOS only (:mod:`iscsiboot.cmdline.usb`).

Guest view of the host (the other modes): QEMU's user network maps 10.0.2.2
to the host's loopback, so a ``tgtd`` on 127.0.0.1:PORT is the guest's
10.0.2.2:PORT.
"""

from __future__ import annotations

import enum
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path

from iscsiboot.cmdline import generate
from iscsiboot.cmdline.parse import tokenize
from iscsiboot.cmdline.usb import NO_UEFI
from iscsiboot.disk.layout import LayoutKind
from iscsiboot.errors import UsageError
from iscsiboot.model import (
    BootConfig,
    Chap,
    Locator,
    LocatorKind,
    NetMode,
    Network,
    Target,
)
from iscsiboot.qemu.netlab import DHCP_RANGE, SERVER_ADDRESS, LabNames, exec_prefix
from iscsiboot.qemu.scripts import script
from iscsiboot.qemu.targets import TargetKind
from iscsiboot.secret import Secret, mask

GUEST_MAC = "52:54:00:12:34:56"
GUEST_NIC = "virtio-net-pci"
GUEST_NIC_MODULES = ("virtio_pci", "virtio_net")  # its drivers, which an overlay must be built with
GUEST_ADDRESS = "10.0.2.15"
GUEST_PREFIX = 24
HOST_ADDRESS = "10.0.2.2"  # the host's loopback as the guest sees it
GUEST_DNS = "10.0.2.3"
# UEFI: Debian's OVMF, and iPXE's EFI driver on the NIC (the ROM also holds the legacy PXE one)
OVMF = Path("/usr/share/ovmf/OVMF.fd")
EFI_ROM = Path("/usr/lib/ipxe/qemu/efi-virtio.rom")
# Debian's prebuilt iPXE (package ipxe): what a PXE client chain-loads over TFTP
IPXE_DIR = Path("/usr/lib/ipxe")
BIOS_IMAGE = "undionly.kpxe"
EFI_IMAGE = "ipxe.efi"
# OVMF's own PXE and HTTP boot clients: off, so that the NIC's iPXE driver is the one that boots
OVMF_NET_OFF = tuple(f"name=opt/org.tianocore/{knob},string=n"
                     for knob in ("IPv4PXESupport", "IPv6PXESupport", "HttpBootSupport"))  # fmt: skip
TID = 1
MIN_SECRET = 12  # tgt refuses shorter CHAP secrets for some initiators
MAX_SECRET = 16
SANBOOT_ATTEMPTS = 5  # iPXE gives up after these, and the wrapper powers off
BOOTFILE = "boot.ipxe"
SCENARIO_SCRIPT = "scenario.ipxe"
DEFAULT_TARGET = "iqn.2026-11.org.iscsiboot:htpc"
DEFAULT_INITIATOR = "iqn.2026-11.org.iscsiboot:client"
FAILURE_OPTION = "iscsiboot.on_failure=poweroff"
AGENT_PREFIX = "iscsiboot: "  # the agent's console lines
# --target-delay counts from the agent's "network up" line: the agent is about
# to log in, so a late target really meets a client that has to retry.
DELAY_ANCHOR = "iscsiboot: network:"


def network_is_up(line: str) -> bool:
    """Whether a console line says the guest's network is up (the late target's clock starts).

    The kernel's copy of the agent's line may land inside the console copy
    (``iscsiboot: netwo[  5.57] iscsiboot: network: eth0 ...``), so the
    marker counts anywhere on the line.
    """
    return DELAY_ANCHOR in line


class Mode(enum.Enum):
    IBFT = "ibft"
    CMDLINE = "cmdline"
    DHCP = "dhcp"


class Boot(enum.Enum):
    """How QEMU starts the kernel."""

    SANBOOT = "sanboot"  # iPXE from the NIC ROM, sanboot of the LUN
    DIRECT = "direct"  # -kernel/-initrd/-append


class BootVia(enum.Enum):
    """How the guest gets to iPXE in ibft mode (values are the CLI spellings)."""

    ROM = "rom"  # the NIC's iPXE ROM, QEMU's user-mode DHCP and TFTP
    DNSMASQ = "dnsmasq"  # the firmware's PXE, dnsmasq's TFTP, Debian's undionly.kpxe / ipxe.efi
    USB = "usb"  # generate usb's stick: syslinux, Debian's ipxe.lkrn, the embedded script


class Firmware(enum.Enum):
    """The guest's firmware (values are the CLI spellings)."""

    BIOS = "bios"  # SeaBIOS, iPXE's legacy ROM, the MBR's boot code, syslinux
    UEFI = "uefi"  # OVMF, iPXE's EFI driver, EFI/BOOT/bootx64.efi (syslinux.efi) on a FAT System


@dataclass(frozen=True)
class ScenarioOptions:
    """One scenario: what the target offers, what the client is told, which fault."""

    mode: Mode = Mode.IBFT
    target: TargetKind = TargetKind.TGT  # which implementation serves the disk
    target_name: str = DEFAULT_TARGET
    initiator: str = DEFAULT_INITIATOR
    username: str | None = None
    password: Secret | None = None
    reverse_username: str | None = None
    reverse_password: Secret | None = None
    system_label: str = "System"
    storage_label: str = "Storage"
    # faults
    client_password: Secret | None = None  # the client gets this instead of ``password``
    target_delay: float = 0.0  # the target appears this many seconds after the guest's network is up
    acpi_ibft: bool = False  # inject the iBFT through -acpitable instead of iPXE
    vlan: int | None = None  # the injected iBFT's NIC is on this 802.1Q VLAN (acpi_ibft only)
    disk_storage_label: str | None = None  # label written on the disk (default: storage_label)
    no_root_path: bool = False  # dhcp mode: dnsmasq sends no root path (option 17)
    lun_block_size: int | None = None  # tgt serves the disk in blocks of this size (512 by default)
    empty_lun: bool = False  # tgt serves a LUN of 0 bytes instead of the disk
    firmware: Firmware = Firmware.BIOS
    boot_via: BootVia = BootVia.ROM
    mac: str = GUEST_MAC  # the guest NIC's address (several guests on one bridge need their own)
    layout: LayoutKind | None = None  # the disk's layout; None: libreelec under UEFI, seed under BIOS
    # machine
    kvm: bool = False
    memory_mb: int = 1024
    cpus: int = 2
    timeout: float = 120.0
    extra_append: tuple[str, ...] = ()
    # the disk image to serve, built here when missing and kept (a later boot sees what this one wrote)
    disk: Path | None = None
    # keep following the console after the agent's result until QEMU exits
    # (to see the guest power off after a failure or a break=)
    until_exit: bool = False
    qmp: bool = False  # a QMP socket (Files.qmp) for the host to act on the machine (set_link)

    def __post_init__(self) -> None:
        if self.password is not None and self.username is None:
            raise UsageError("a CHAP password without a user name", fix="add --username")
        if self.username is not None and self.password is None:
            raise UsageError(f"CHAP user {self.username!r} has no password", fix="add --password")
        if (self.reverse_username is None) != (self.reverse_password is None):
            raise UsageError("mutual CHAP needs both --reverse-username and --reverse-password")
        if self.reverse_username is not None and self.username is None:
            raise UsageError(
                "mutual (reverse) CHAP without one-way CHAP", fix="add --username and --password"
            )
        for what, secret in (
            ("--password", self.password),
            ("--reverse-password", self.reverse_password),
            ("--client-password", self.client_password),
        ):
            if secret is not None and not MIN_SECRET <= len(secret) <= MAX_SECRET:
                raise UsageError(
                    f"{what} has {len(secret)} characters",
                    fix=f"use a CHAP secret of {MIN_SECRET}-{MAX_SECRET} characters (tgt and iPXE need it)",
                )
        if self.client_password is not None and self.password is None:
            raise UsageError("--client-password needs CHAP on the target", fix="add --username/--password")
        if self.target_delay < 0:
            raise UsageError("--target-delay must not be negative")
        if self.acpi_ibft and self.mode is not Mode.IBFT:
            raise UsageError("--acpi-ibft belongs to --mode ibft", fix="use --mode ibft --acpi-ibft")
        if (self.lun_block_size is not None or self.empty_lun) and (
            self.mode is not Mode.CMDLINE or self.target is not TargetKind.TGT
        ):
            raise UsageError(
                "an odd block size or an empty LUN is served by tgt to a direct boot",
                fix="use --mode cmdline with --target tgt",
            )
        if self.no_root_path and self.mode is not Mode.DHCP:
            raise UsageError("--no-root-path belongs to --mode dhcp", fix="use --mode dhcp --no-root-path")
        if self.mode is Mode.DHCP and self.target is not TargetKind.TGT:
            raise UsageError("--mode dhcp serves the disk from tgt", fix="drop --target or use another mode")
        if self.mode is Mode.DHCP and self.username is not None:
            raise UsageError(
                "the DHCP root path that dnsmasq sends carries no CHAP credentials",
                fix="drop --username/--password with --mode dhcp",
            )
        sanboot_from_tgt = self.boot is Boot.SANBOOT and self.target is TargetKind.TGT
        if self.boot_via is not BootVia.ROM and not sanboot_from_tgt:
            raise UsageError(
                f"--boot-via {self.boot_via.value} is an iPXE sanboot from tgt",
                fix="use --mode ibft without --acpi-ibft, with --target tgt",
            )
        if self.boot_via is BootVia.USB and self.firmware is not Firmware.BIOS:
            raise UsageError(f"--boot-via usb: {NO_UEFI}", fix="use --firmware bios")
        if self.vlan is not None and not self.acpi_ibft:
            raise UsageError("a VLAN needs the injected iBFT", fix="add --acpi-ibft")
        if self.vlan is not None and not 1 <= self.vlan <= 4094:
            raise UsageError(f"VLAN {self.vlan} is out of range", fix="use a VLAN id of 1-4094")
        if self.target_delay > 0 and self.boot is Boot.SANBOOT:
            raise UsageError(
                "iPXE sanboot cannot wait for a late target",
                fix="use --mode cmdline or --acpi-ibft with --target-delay",
            )
        if self.timeout <= 0:
            raise UsageError("--timeout must be positive")
        if self.firmware is Firmware.UEFI and self.disk_layout is LayoutKind.SEED:
            raise UsageError(
                "an ext4 System with extlinux does not boot under UEFI", fix="use the libreelec layout (FAT)"
            )
        for label in (self.system_label, self.storage_label, self.disk_storage_label):
            if label is not None and (not label or len(label) > 16 or any(c in label for c in " ,=")):
                raise UsageError(
                    f"file system label {label!r} is not usable",
                    fix="use 1-16 characters without spaces, commas or '='",
                )
        Target(self.target_name, HOST_ADDRESS)  # validates the target name
        if not self.initiator or any(c.isspace() or c == "," for c in self.initiator):
            raise UsageError(f"initiator name {self.initiator!r} is not usable")

    @property
    def boot(self) -> Boot:
        if self.mode is Mode.IBFT and not self.acpi_ibft:
            return Boot.SANBOOT
        return Boot.DIRECT

    @property
    def in_lab(self) -> bool:
        """Whether guest, dnsmasq and target share a network namespace of their own."""
        return self.mode is Mode.DHCP or self.boot_via is BootVia.DNSMASQ

    @property
    def disk_layout(self) -> LayoutKind:
        """The layout of the disk to build: the one asked for, else the one the firmware boots."""
        if self.layout is not None:
            return self.layout
        return LayoutKind.LIBREELEC if self.firmware is Firmware.UEFI else LayoutKind.SEED

    @property
    def written_storage_label(self) -> str:
        return self.disk_storage_label or self.storage_label

    def secrets(self) -> tuple[Secret, ...]:
        return tuple(s for s in (self.password, self.reverse_password, self.client_password) if s is not None)


@dataclass(frozen=True)
class Account:
    username: str
    password: Secret
    outgoing: bool  # the target's own credentials (mutual CHAP)


@dataclass(frozen=True)
class TargetSpec:
    """What tgtd serves: one target, its LUN backed by the disk image, its accounts."""

    tid: int
    iqn: str
    lun: int
    image: Path
    accounts: tuple[Account, ...]
    delay: float
    block_size: int | None = None  # the LUN's logical block size (None: the target's default)


@dataclass(frozen=True)
class Files:
    """Where a scenario keeps its files (all inside one work folder)."""

    workdir: Path

    @property
    def tftp(self) -> Path:
        return self.workdir / "tftp"

    @property
    def script(self) -> Path:
        return self.tftp / BOOTFILE

    @property
    def scenario_script(self) -> Path:
        return self.tftp / SCENARIO_SCRIPT

    @property
    def disk(self) -> Path:
        return self.workdir / "disk.img"

    @property
    def empty(self) -> Path:
        """The 0-byte LUN of the empty-LUN fault."""
        return self.workdir / "empty.img"

    @property
    def stick(self) -> Path:
        return self.workdir / "stick.img"

    @property
    def console(self) -> Path:
        return self.workdir / "console.log"

    @property
    def qemu_log(self) -> Path:
        return self.workdir / "qemu.log"

    @property
    def table(self) -> Path:
        return self.workdir / "ibft.bin"

    @property
    def tgt(self) -> Path:
        return self.workdir / "tgt"

    @property
    def qmp(self) -> Path:
        return self.workdir / "qmp.sock"


@dataclass(frozen=True)
class Plan:
    options: ScenarioOptions
    port: int
    files: Files
    client: BootConfig  # what the guest is told (with the fault's password)
    append: str  # kernel command line (extlinux.conf APPEND or -append)
    target: TargetSpec
    ipxe_script: str | None  # sanboot only
    table_config: BootConfig | None  # acpi_ibft only: the model of the injected iBFT
    qemu_argv: tuple[str, ...] = field(default=())
    lab: LabNames | None = None  # dhcp only: the network namespace of guest, dnsmasq and target
    dnsmasq_config: str | None = None  # dhcp only

    @property
    def portal_text(self) -> str:
        """Where the target listens, as the harness sees it."""
        if self.lab is not None:
            return f"{SERVER_ADDRESS}:{self.port} (namespace {self.lab.namespace})"
        return f"127.0.0.1:{self.port} (guest: {HOST_ADDRESS}:{self.port})"

    @property
    def boot(self) -> Boot:
        return self.options.boot

    def secrets(self) -> tuple[Secret, ...]:
        return self.options.secrets()

    def masked(self, text: str) -> str:
        return mask(text, self.secrets())

    def describe(self) -> str:
        """A human-readable summary with secrets masked."""
        lines = [
            f"mode: {self.options.mode.value} ({self.boot.value}"
            + (", iBFT through -acpitable" if self.options.acpi_ibft else "")
            + f", {self.options.firmware.value}, {self.options.disk_layout.value} layout"
            + (f" on VLAN {self.options.vlan}" if self.options.vlan is not None else "")
            + ")",
            f"target: {self.target.iqn} LUN {self.target.lun} on {self.portal_text}",
            f"append: {self.masked(self.append)}",
            "qemu: " + self.masked(shlex.join(self.qemu_argv)),
        ]
        if self.options.target_delay:
            lines.insert(2, f"target appears {self.options.target_delay:g} s after the guest's network is up")
        return "\n".join(lines)


# ---------------------------------------------------------------- planning


def client_config(options: ScenarioOptions, port: int, lun: int | None = None) -> BootConfig:
    """What the client is given: the target (at the host as the guest sees it), CHAP, initiator.

    This is the model of the iPXE script and of the injected iBFT; the
    kernel command line is :func:`kernel_config`.  ``lun``: the disk's LUN as
    the running target reported it (before that, the target kind's usual one).
    """
    chap = None
    reverse = None
    if options.username is not None and options.password is not None:
        chap = Chap(options.username, options.client_password or options.password)
    if options.reverse_username is not None and options.reverse_password is not None:
        reverse = Chap(options.reverse_username, options.reverse_password)
    target = Target(
        name=options.target_name,
        address=SERVER_ADDRESS if options.in_lab else HOST_ADDRESS,
        port=port,
        lun=options.target.usual_lun if lun is None else lun,
        chap=chap,
        reverse_chap=reverse,
    )
    return BootConfig(
        firmware=False,
        initiator=options.initiator,
        targets=(target,),
        network=Network(mode=NetMode.DHCP),
        system=Locator(LocatorKind.LABEL, options.system_label),
        storage=Locator(LocatorKind.LABEL, options.storage_label),
    )


def kernel_config(options: ScenarioOptions, client: BootConfig) -> BootConfig:
    """The model written on the kernel command line.

    ``ibft``: ``boot=ISCSI=auto`` (targets, initiator and network come from
    the iBFT).  ``cmdline``: the explicit OpenELEC form with ``ip=dhcp``;
    the LUN is left out (that form has none: the agent finds the labels).
    """
    if options.mode is Mode.IBFT:
        return BootConfig(firmware=True, system=client.system, storage=client.storage)
    if options.mode is Mode.DHCP:
        return replace(client, targets=(), target_from_dhcp=True)
    return replace(client, targets=tuple(replace(t, lun=None) for t in client.targets))


def table_config(client: BootConfig, vlan: int | None = None) -> BootConfig:
    """The model of an iBFT that firmware on QEMU's user network would write (on ``vlan``)."""
    return replace(
        client,
        firmware=True,
        network=Network(
            mode=NetMode.STATIC,
            mac=GUEST_MAC,
            address=GUEST_ADDRESS,
            prefix=GUEST_PREFIX,
            gateway=HOST_ADDRESS,
            server=HOST_ADDRESS,
            dns=(GUEST_DNS,),
            vlan=vlan,
        ),
    )


def boot_options(cfg: BootConfig) -> list[str]:
    """The ``ip=``/``boot=``/``disk=`` options for ``cfg`` (``iscsiboot generate cmdline``)."""
    return list(tokenize(generate.cmdline(cfg).text))


def dracut_options(cfg: BootConfig) -> list[str]:
    """dracut's form for ``cfg`` (``iscsiboot generate dracut``), and ``disk=`` for its Storage."""
    words = list(tokenize(generate.dracut(replace(cfg, storage=None)).text))
    return words + ([f"disk={cfg.storage}"] if cfg.storage is not None else [])


def dnsmasq_config(options: ScenarioOptions, client: BootConfig, files: Files, lab: LabNames) -> str:
    """``iscsiboot generate dnsmasq`` for the lab's bridge (without the root path for ``no_root_path``)."""
    text = generate.dnsmasq(
        client,
        interface=lab.bridge,
        dhcp_range=DHCP_RANGE,
        tftp_root=str(files.tftp),
        script=BOOTFILE,
        bios_image=BIOS_IMAGE,
        efi_image=EFI_IMAGE,
        dns=False,
    ).text
    if options.no_root_path:
        line = generate.dnsmasq_root_path_line(generate.root_path(client).text)
        text = "".join(kept for kept in text.splitlines(keepends=True) if kept.rstrip("\n") != line)
    return text


def append_line(options: ScenarioOptions, client: BootConfig) -> str:
    words = ["console=ttyS0,115200", "panic=1"]
    kernel = kernel_config(options, client)
    words += dracut_options(kernel) if kernel.target_from_dhcp else boot_options(kernel)
    words += [FAILURE_OPTION, *options.extra_append]
    return " ".join(words)


WRAPPER_SCRIPT = script("wrapper.ipxe", SCENARIO_SCRIPT=SCENARIO_SCRIPT)


def ipxe_script(client: BootConfig, *, embedded: bool = False) -> str:
    """The scenario's iPXE script for sanboot mode (``iscsiboot generate ipxe``).

    QEMU's TFTP serves :data:`WRAPPER_SCRIPT` as the boot file; it chains
    this script and powers the machine off when it fails, so a failed
    ``sanboot`` ends QEMU instead of leaving it at the BIOS.
    """
    text = _generated_ipxe(client, embedded=embedded)
    if not text.startswith("#!ipxe"):
        text = "#!ipxe\n" + text
    return text if text.endswith("\n") else text + "\n"


def _generated_ipxe(client: BootConfig, *, embedded: bool = False) -> str:
    """``iscsiboot generate ipxe`` for ``client`` (chain-loaded form).

    The attempts are bounded so that a login iPXE cannot make (a wrong
    password in ibft mode) ends in the wrapper's power-off, not in the
    scenario's timeout.
    """
    return generate.ipxe(client, embedded=embedded, attempts=SANBOOT_ATTEMPTS).text


def qemu_argv(
    options: ScenarioOptions,
    files: Files,
    *,
    append: str,
    kernel: Path | None,
    initrd: Path | None,
    qemu: str = "qemu-system-x86_64",
    lab: LabNames | None = None,
) -> tuple[str, ...]:
    netdev = f"user,id=n0,tftp={files.tftp},bootfile={BOOTFILE}"
    if lab is not None:
        netdev = f"tap,id=n0,ifname={lab.tap},script=no,downscript=no"
    uefi = options.firmware is Firmware.UEFI
    nic = f"{GUEST_NIC},netdev=n0,mac={options.mac}"
    firmware_pxe = uefi and options.boot_via is BootVia.DNSMASQ
    if options.boot_via is BootVia.USB:
        nic += ",romfile="  # no boot ROM: the stick brings iPXE
    elif firmware_pxe:
        nic += ",romfile=,bootindex=1"  # no iPXE at all: OVMF's own PXE client boots from the NIC
    elif uefi:
        nic += f",romfile={EFI_ROM},bootindex=1"  # straight to iPXE, not the firmware's boot menu
    argv = [
        *(exec_prefix(lab.namespace) if lab is not None else ()),
        qemu,
        "-machine",
        "q35" if uefi else "pc",
        "-accel",
        "kvm" if options.kvm else "tcg",
        "-cpu",
        "host" if options.kvm else "max",  # max: RDRAND seeds the kernel's RNG early under TCG
        "-m",
        str(options.memory_mb),
        "-smp",
        str(options.cpus),
        "-display",
        "none",
        "-monitor",
        "none",
        "-chardev",
        f"file,id=c0,path={files.console}",
        "-serial",
        "chardev:c0",
        "-no-reboot",
        "-netdev",
        netdev,
        "-device",
        nic,
    ]
    if options.qmp:
        argv += ["-qmp", f"unix:{files.qmp},server=on,wait=off"]
    if uefi:
        argv += ["-bios", str(OVMF)]
        for knob in () if firmware_pxe else OVMF_NET_OFF:
            argv += ["-fw_cfg", knob]
    if options.boot_via is BootVia.USB:
        argv += ["-device", "usb-ehci,id=ehci", "-drive", f"if=none,id=stick,format=raw,file={files.stick}"]
        argv += ["-device", "usb-storage,bus=ehci.0,drive=stick,bootindex=0"]
    elif options.boot is Boot.SANBOOT:
        if not uefi:  # under UEFI the NIC's bootindex picks it
            argv += ["-boot", "n"]
    else:
        if kernel is None or initrd is None:
            raise UsageError("a direct kernel boot needs a kernel and an initramfs")
        argv += ["-kernel", str(kernel), "-initrd", str(initrd), "-append", append]
        if options.acpi_ibft:
            argv += ["-acpitable", f"file={files.table}"]
    return tuple(argv)


def target_spec(options: ScenarioOptions, files: Files, lun: int | None = None) -> TargetSpec:
    accounts: list[Account] = []
    if options.username is not None and options.password is not None:
        accounts.append(Account(options.username, options.password, outgoing=False))
    if options.reverse_username is not None and options.reverse_password is not None:
        accounts.append(Account(options.reverse_username, options.reverse_password, outgoing=True))
    return TargetSpec(
        tid=TID,
        iqn=options.target_name,
        lun=options.target.usual_lun if lun is None else lun,
        image=files.empty if options.empty_lun else options.disk or files.disk,
        accounts=tuple(accounts),
        delay=options.target_delay,
        block_size=options.lun_block_size,
    )


def plan(
    options: ScenarioOptions,
    *,
    port: int,
    workdir: Path,
    kernel: Path | None = None,
    initrd: Path | None = None,
    qemu: str = "qemu-system-x86_64",
    lab: LabNames | None = None,
    lun: int | None = None,
) -> Plan:
    """Everything a scenario does, computed without I/O (``lab``: the dhcp mode's namespace;
    ``lun``: the disk's LUN once the running target has said it)."""
    if (lab is not None) != options.in_lab:
        raise UsageError("the dhcp mode and --boot-via dnsmasq, and they alone, boot in a network namespace")
    files = Files(workdir)
    client = client_config(options, port, lun)
    append = append_line(options, client)
    return Plan(
        options=options,
        port=port,
        files=files,
        client=client,
        append=append,
        target=target_spec(options, files, lun),
        ipxe_script=(
            ipxe_script(client, embedded=options.boot_via is BootVia.USB)
            if options.boot is Boot.SANBOOT
            else None
        ),
        table_config=table_config(client, options.vlan) if options.acpi_ibft else None,
        qemu_argv=qemu_argv(options, files, append=append, kernel=kernel, initrd=initrd, qemu=qemu, lab=lab),
        lab=lab,
        dnsmasq_config=dnsmasq_config(options, client, files, lab) if lab is not None else None,
    )
