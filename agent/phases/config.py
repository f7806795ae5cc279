# ruff: noqa: PLC0415  (imports are lazy on purpose: each phase loads only what it needs at boot)
"""Phase config: the boot model from the kernel command line, and from the iBFT for ``auto``.

A command line that takes the target from the DHCP root path (``netroot=dhcp``)
is complete only once the network is up: :func:`target_from_lease` adds the
lease's target before the login.
"""

from __future__ import annotations

from collections.abc import Callable

from iscsiboot.agent.errors import PhaseError
from iscsiboot.agent.plan import merge_firmware
from iscsiboot.errors import IscsibootError
from iscsiboot.model import BootConfig

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    from iscsiboot.agent.plan import NetResult
    from iscsiboot.cmdline.parse import Parsed
    from iscsiboot.ibft.types import Table
    from iscsiboot.secret import Secret

Parse = Callable[[str], "Parsed"]
ReadFirmware = Callable[[], BootConfig]


def _parse(text: str) -> Parsed:
    from iscsiboot.cmdline.parse import parse

    return parse(text)


def read_firmware() -> BootConfig:
    """The iBFT as a boot model (:func:`read_firmware_from`, without the source)."""
    return read_firmware_from()[0]


def read_firmware_from() -> tuple[BootConfig, str]:
    """The iBFT as a boot model, and where it was read.

    The kernel's view (``/sys/firmware/ibft``, from iscsi_ibft) first, as
    dracut and open-iscsi read it: no raw table to parse.  Without it, the
    table itself (ACPI, then the legacy memory scan).
    """
    from iscsiboot.ibft import sources
    from iscsiboot.ibft.mapping import table_to_model

    try:
        found = sources.read_sysfs_found(laid_out=False)  # values only: no construct at boot
    except IscsibootError:
        found = sources.find_auto()
    model, _warnings = table_to_model(found.parsed.table)
    return with_firmware_lease(model, found.parsed.table), found.source


def with_firmware_lease(model: BootConfig, table: Table) -> BootConfig:
    """``model`` whose DHCP network keeps the address the firmware leased (the iBFT NIC's).

    The model of a DHCP-origin NIC names only its MAC; its table also holds the
    address, prefix, gateway and DNS servers the firmware got.  The network phase
    sets them at once and renews the lease in the background (:func:`net_plan`).
    Only a plausible IPv4 host address with a prefix length of 1-32 counts.
    """
    from dataclasses import replace

    from iscsiboot.ibft.codec import address_present
    from iscsiboot.ibft.mapping import plausible_host
    from iscsiboot.model import NetMode

    network = model.network
    if network.mode is not NetMode.DHCP or network.mac is None or network.address is not None:
        return model
    for nic in table.nics:
        address = nic.ip_address
        if nic.mac != network.mac or not address_present(address) or address is None:
            continue
        if ":" in address or not plausible_host(address) or not 1 <= nic.prefix <= 32:
            continue
        gateway = (
            nic.gateway if address_present(nic.gateway) and nic.gateway and ":" not in nic.gateway else None
        )
        dns = tuple(
            d for d in (nic.primary_dns, nic.secondary_dns) if d and address_present(d) and ":" not in d
        )
        try:
            leased = replace(network, address=address, prefix=nic.prefix, gateway=gateway, dns=dns)
        except IscsibootError:  # the model's own checks
            return model
        return replace(model, network=leased)
    return model


def load_config(
    text: str, *, parse: Parse = _parse, firmware: ReadFirmware = read_firmware
) -> tuple[BootConfig, list[str]]:
    """The merged boot model and the parser's warnings."""
    try:
        parsed = parse(text)
    except ImportError as exc:
        raise PhaseError("config", f"the command line parser is missing ({exc})", cause="internal") from None
    except IscsibootError as exc:
        raise PhaseError(
            "config",
            f"the kernel command line does not parse: {exc.what}",
            cause="cmdline",
            evidence=exc.where,
            fix=exc.fix or "correct the boot= / ip= options in extlinux.conf or the iPXE script",
        ) from None
    cfg: BootConfig = parsed.config
    warnings = [str(w) for w in parsed.warnings]
    if cfg.firmware:
        try:
            fw = firmware()
        except IscsibootError as exc:
            raise PhaseError(
                "config",
                f"boot=ISCSI=auto needs the iBFT, but it cannot be read: {exc.what}",
                cause="no-ibft",
                evidence=exc.where,
                fix="boot through iPXE sanboot (it writes the iBFT) "
                "or give the iSCSI options on the command line",
            ) from None
        cfg = merge_firmware(cfg, fw)
    if cfg.target_from_dhcp and cfg.initiator is None:
        raise PhaseError(
            "config",
            "the target comes from the DHCP root path, but the command line names no initiator",
            cause="cmdline",
            fix="add rd.iscsi.initiator=<initiator IQN> (or iscsi_initiator=)",
        )
    if not cfg.targets and not cfg.firmware and not cfg.target_from_dhcp:
        raise PhaseError(
            "config",
            "the command line names no iSCSI target",
            cause="cmdline",
            fix="add boot=ISCSI=auto,LABEL=System (iBFT) or "
            "boot=ISCSI=iscsi_initiator=...,iscsi_target_name=...,"
            "iscsi_target_ip=...,LABEL=System",
        )
    return cfg, warnings


def target_from_lease(
    cfg: BootConfig, net: NetResult, add_secrets: Callable[[Iterable[Secret]], None]
) -> BootConfig:
    """``cfg`` (``target_from_dhcp``) with the target of the lease's root path (option 17).

    The credentials of the root path are secrets: ``add_secrets`` gets them
    before anything shows the model.  A lease without a root path, or with
    one that does not parse, is a :class:`PhaseError` of the login phase that
    names the cause (``no-root-path``, ``root-path``) and the fix.
    """
    from iscsiboot.cmdline.dhcproot import NO_ROOT_PATH, with_root_path

    evidence = f"DHCP lease of {net.address} on {net.device} from server {net.server or '(unknown)'}"
    try:
        done = with_root_path(cfg, net.root_path)
    except IscsibootError as exc:
        cause = "no-root-path" if exc.what == NO_ROOT_PATH else "root-path"
        where = f"; {exc.where}" if exc.where and cause == "root-path" else ""
        raise PhaseError("login", exc.what, cause=cause, evidence=evidence + where, fix=exc.fix) from None
    add_secrets(done.secrets())
    return done
