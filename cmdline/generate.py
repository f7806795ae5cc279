"""Write the boot model out as kernel command lines, extlinux.conf, iPXE, dnsmasq and root paths.

Every function returns :class:`Generated`: the real text (secrets included),
the warnings, and the secrets it contains, so that the caller can mask them
(:func:`iscsiboot.secret.mask`) before showing the text.  What a format
cannot express raises :class:`~iscsiboot.errors.RepresentError` naming the
value and the alternative (usually the iBFT, ``auto`` mode).

Choices:

* ``cmdline``/``extlinux``: ``boot=ISCSI=<spec>,<system>`` names
  ``targets[0]``; with ``storage_on_iscsi`` ``disk=ISCSI=<spec>,<storage>``
  names ``targets[1]`` when there is one, else repeats the boot target.  In
  firmware mode both say ``ISCSI=auto``.  The spec always carries the initiator
  (iscsistart needs it), the port and the portal group.  Those forms carry no
  LUN: a model with a LUN gives a warning, not a refusal.  Values with a comma,
  a quote or white space cannot be written; a locator with white space is
  quoted (``boot="ISCSI=auto,LABEL=HTPC System"``).
* Secrets on a kernel command line are readable by every local user
  (``/proc/cmdline``): a warning says so.  CHAP names and secrets must be
  printable ASCII of at most 255 characters in every format
  (:mod:`iscsiboot.cmdline.chap`); secrets under 12 characters get a warning.
* Secrets are masked by the caller, not here: ``iscsiboot generate`` writes
  the real text into ``-o FILE`` (mode 0600, atomically) and shows ``***`` on
  stdout unless ``--show-secrets``, with a warning on stderr.
* ``ipxe``: the sanboot URI is the RFC 4173 root path of ``targets[0]`` with
  its LUN (iPXE's default is LUN 0: LIO and istgt serve the disk there, tgt at
  LUN 1, so a missing LUN is warned about);
  credentials go in iPXE settings, which iPXE also copies into the iBFT.  A
  second target (storage) is attached with ``sanhook``.  The script retries
  ``sanboot`` for ever, or ``attempts`` times and then exits with failure.
* ``dnsmasq``: the root path (option 17) carries no credentials.
* ``dracut``: ``rd.iscsi.*`` and ``netroot=`` with credentials in the root path.
* A model that takes its target from the DHCP root path (``target_from_dhcp``)
  is written ``boot=ISCSI=dhcp,<system>`` with ``iscsi_initiator=`` (the
  cmdline forms) or ``netroot=dhcp`` (dracut).
* Names hold RFC 3722's characters only, except that a target name may hold
  ``@`` (dracut reads it; a warning says RFC 3722 does not allow it): root
  paths then carry dracut's empty credentials part (``iscsi:@<server>:...``),
  except iPXE's sanboot URI, which takes the plain form.
* LibreELEC's ``@UID@`` (:mod:`iscsiboot.cmdline.uid`) in a name, a CHAP
  value or a locator: names are checked with a 12-digit id in its place.
  ``cmdline``/``extlinux`` keep it where LibreELEC's init and the agent
  replace it, in the ``boot=`` and ``disk=`` values, and refuse it anywhere
  else on the line (the ``iscsi_initiator=`` of the DHCP form, ``ip=``,
  ``--append``, the kernel and initrd paths).  ``ipxe`` (and so ``usb``)
  writes it as ``${netX/mac:hexraw}``: iPXE fills in the MAC of the NIC it
  last opened (the one it booted from) as lower-case hex without colons,
  the agent's id on a machine without a CPU serial (x86), before the login,
  and the iBFT then carries the filled-in initiator name.  A root path goes
  to every client alike and nothing replaces ``@UID@`` in it: ``root-path``
  and ``dracut`` refuse it, ``dnsmasq`` leaves option 17 out with a warning
  (a clients file gives each MAC its own, :mod:`iscsiboot.cmdline.clients`).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass, replace

from iscsiboot.cmdline import uid
from iscsiboot.cmdline.chap import CHAP_MIN_ADVISED, check_credential
from iscsiboot.cmdline.dhcproot import dnsmasq_root_path_line
from iscsiboot.cmdline.ipconf import format_ip
from iscsiboot.cmdline.ipxescript import check_word
from iscsiboot.cmdline.rootpath import format_root_path
from iscsiboot.cmdline.syntax import bad_char, check_dnsmasq, check_text
from iscsiboot.errors import RepresentError
from iscsiboot.model import (
    DEFAULT_GROUP,
    BootConfig,
    Chap,
    Locator,
    NetMode,
    Target,
    iscsi_name_problem,
)
from iscsiboot.secret import Secret

__all__ = [
    "COMMAND_LINE_MAX",
    "IPXE_UID",
    "Generated",
    "cmdline",
    "dnsmasq",
    "dnsmasq_root_path_line",
    "dracut",
    "extlinux",
    "ipxe",
    "root_path",
]

#: x86 COMMAND_LINE_SIZE (bytes, with the final NUL).
COMMAND_LINE_MAX = 2048
#: DHCP options hold at most 255 bytes (RFC 2132): the root path (option 17) too.
DHCP_OPTION_MAX = 255
AT_SIGN_WARNING = (
    "the target name {name!r} holds '@', which RFC 3722 does not allow: dracut and this agent read it "
    "(a root path writes it after dracut's empty credentials part, iscsi:@<server>:...), other "
    "initiators may refuse it"
)
_AUTO_FIX = "use iSCSI firmware instead (an iBFT from iPXE or the NIC: boot=ISCSI=auto)"
#: iPXE's own spelling of the agent's id on x86: the boot NIC's MAC, hex digits without colons
#: (iPXE's settings type ``hexraw``; ``netX`` is the network device iPXE opened last).
IPXE_UID = "${netX/mac:hexraw}"
IPXE_UID_WARNING = (
    "@UID@ is written as " + IPXE_UID + ": iPXE fills in its boot NIC's MAC without colons, the "
    "agent's id on a machine without a CPU serial number (x86); an ARM board with a serial is "
    "another id to the agent"
)
ROOT_PATH_UID_WARNING = (
    "the root path (option 17) is left out: it would carry @UID@, which dnsmasq sends to every "
    "client alike and the agent does not replace (only in boot= and disk= values); iPXE's script "
    "and the iBFT name each client's target (generate dnsmasq --clients FILE writes a root path per MAC)"
)
_PROC_WARNING = (
    "the kernel command line carries CHAP secrets: every local user can read them in /proc/cmdline "
    "(prefer the iBFT: auto mode)"
)


@dataclass(frozen=True)
class Generated:
    """Generated text (secrets in clear), warnings, and the secrets it contains."""

    text: str
    warnings: tuple[str, ...] = ()
    secrets: tuple[Secret, ...] = ()


# ---------------------------------------------------------------- LibreELEC's @UID@


def _sample(value: str) -> str:
    """``value`` as one client sees it (an id of the longest length): what the checks look at."""
    return value.replace(uid.PLACEHOLDER, "0" * uid.LONGEST)


def _sample_chap(chap: Chap | None) -> Chap | None:
    if chap is None:
        return None
    return Chap(_sample(chap.username), Secret(_sample(chap.password.reveal())))


def _sample_target(target: Target) -> Target:
    return replace(
        target,
        name=_sample(target.name),
        chap=_sample_chap(target.chap),
        reverse_chap=_sample_chap(target.reverse_chap),
    )


def _has_uid(target: Target, *, credentials: bool = True) -> bool:
    values = [target.name]
    if credentials:
        for chap in (target.chap, target.reverse_chap):
            if chap is not None:
                values += [chap.username, chap.password.reveal()]
    return any(uid.PLACEHOLDER in value for value in values)


def model_has_uid(cfg: BootConfig) -> bool:
    """Whether a value of ``cfg`` holds ``@UID@`` (names, credentials, locators, network)."""
    net = cfg.network
    values = [cfg.initiator, str(cfg.system or ""), str(cfg.storage or ""), net.hostname, net.device]
    return any(uid.PLACEHOLDER in (v or "") for v in values) or any(_has_uid(t) for t in cfg.targets)


def _ipxe_text(value: str) -> str:
    """``value`` for an iPXE script: ``@UID@`` becomes iPXE's :data:`IPXE_UID`."""
    return value.replace(uid.PLACEHOLDER, IPXE_UID)


def _left_over(tokens: Sequence[str]) -> str | None:
    """The option among ``tokens`` whose ``@UID@`` nobody replaces (LibreELEC's init and the agent
    replace it in ``boot=`` and ``disk=`` values, up to white space), or None."""
    for token in tokens:
        if uid.PLACEHOLDER in uid.substitute(token, "0" * uid.LONGEST):
            return token.split("=", 1)[0] + "=" if "=" in token else repr(token)
    return None


# ---------------------------------------------------------------- kernel command line


def _spec_value(value: str, what: str, *, secret: bool = False) -> str:
    check_text(value, what, secret=secret)
    if not value or any(c.isspace() or c in ',"' for c in value):
        raise RepresentError(
            f"the {what} cannot go in an OpenELEC spec (empty, or has a comma, a quote or white space)",
            fix=_AUTO_FIX,
        )
    return value


def _locator_text(locator: Locator, what: str) -> str:
    text = check_text(str(locator), f"{what} locator (--{what})")
    if "," in text or '"' in text or "\n" in text:
        raise RepresentError(
            f"the {what} locator cannot go on the command line (it has a comma, a quote or a newline)",
            fix="choose another label",
        )
    return text


def _token(param: str, value: str) -> str:
    # the kernel's isspace() is true for the byte 0xA0 too (inside some UTF-8 characters)
    if any(c.isspace() for c in value) or 0xA0 in value.encode("utf-8"):
        return f'{param}="{value}"'
    return f"{param}={value}"


def _chap_items(chap: Chap | None, user_key: str, pass_key: str, what: str) -> list[str]:
    if chap is None:
        return []
    user = check_credential(chap.username, f"{what} user name")
    secret = check_credential(chap.password.reveal(), f"{what} secret")
    return [
        f"{user_key}={_spec_value(user, what + ' user name')}",
        f"{pass_key}={_spec_value(secret, what + ' secret', secret=True)}",
    ]


def _check_name(name: str, what: str, *, at_sign: bool = False) -> None:
    problem = iscsi_name_problem(_sample(name), at_sign=at_sign)
    if problem is not None:
        raise RepresentError(
            f"the {what} {problem}", fix="give an iSCSI name such as iqn.2024-01.org.example:disk"
        )


def _check_names(cfg: BootConfig) -> list[str]:
    """Every generated format writes names of RFC 3722's characters only (the storage target's too).

    A target name may hold ``@`` besides (dracut reads it): the warnings say
    that RFC 3722 does not allow it.
    """
    if cfg.initiator is not None:
        _check_name(cfg.initiator, "initiator name (--initiator, JSON initiator)")
    warnings = []
    for i, target in enumerate(cfg.targets):
        _check_name(target.name, f"target name (--target-name, JSON targets[{i}].name)", at_sign=True)
        if "@" in _sample(target.name):
            warnings.append(AT_SIGN_WARNING.format(name=target.name))
    return warnings


def spec(initiator: str, target: Target) -> str:
    """The OpenELEC ``key=value`` list (without the locator) for one target."""
    _check_name(initiator, "initiator name (--initiator, JSON initiator)")
    _check_name(target.name, "target name (--target-name)", at_sign=True)
    items = [
        f"iscsi_initiator={_spec_value(initiator, 'initiator name')}",
        f"iscsi_target_name={_spec_value(target.name, 'target name')}",
        f"iscsi_target_ip={_spec_value(target.address, 'target address')}",
        f"iscsi_target_port={target.port}",
        f"iscsi_target_group={target.group}",
        *_chap_items(target.chap, "iscsi_username", "iscsi_password", "CHAP"),
        *_chap_items(target.reverse_chap, "iscsi_in_username", "iscsi_in_password", "reverse CHAP"),
    ]
    return ",".join(items)


def _net_tokens(cfg: BootConfig) -> list[str]:
    tokens = []
    ip = format_ip(cfg.network)
    if ip is not None:
        tokens.append(f"ip={check_text(ip, 'ip= value (--ip, JSON network)')}")
    if cfg.network.mac is not None:
        tokens.append("BOOTIF=01-" + cfg.network.mac.replace(":", "-"))
    return tokens


def _cmdline_tokens(cfg: BootConfig) -> tuple[list[str], list[str]]:
    warnings = _check_names(cfg)
    tokens = _net_tokens(cfg)
    if cfg.storage_on_iscsi and cfg.storage is None:
        raise RepresentError("storage on iSCSI without a storage locator", fix="give --storage LABEL=Storage")
    if cfg.target_from_dhcp:
        return tokens + _dhcp_tokens(cfg), warnings
    if cfg.firmware:
        if cfg.targets:
            raise RepresentError(
                "a firmware (iBFT) model with explicit targets",
                fix="drop --auto, or drop the targets and let the iBFT name them",
            )
        if cfg.initiator is not None:
            raise RepresentError(
                "an initiator name in firmware (iBFT) mode: the iBFT carries it",
                fix="drop --initiator, or drop --auto",
            )
        if cfg.system is None:
            raise RepresentError("boot=ISCSI=auto needs a system locator", fix="give --system LABEL=System")
        tokens.append(_token("boot", f"ISCSI=auto,{_locator_text(cfg.system, 'system')}"))
        if cfg.storage is not None:
            storage = _locator_text(cfg.storage, "storage")
            tokens.append(_token("disk", f"ISCSI=auto,{storage}" if cfg.storage_on_iscsi else storage))
        return tokens, warnings
    if not cfg.targets:
        if cfg.storage_on_iscsi:
            raise RepresentError("storage on iSCSI without a target", fix="give the target or --auto")
        if cfg.initiator is not None:
            warnings.append("the initiator name is left out: without a target the boot does not log in")
        if cfg.system is not None:
            tokens.append(_token("boot", _locator_text(cfg.system, "system")))
        if cfg.storage is not None:
            tokens.append(_token("disk", _locator_text(cfg.storage, "storage")))
        return tokens, warnings
    if cfg.initiator is None:
        raise RepresentError(
            "an explicit iSCSI target needs an initiator name on this command line (iscsistart requires it)",
            fix="give --initiator iqn.YYYY-MM.<domain>:<name>, or " + _AUTO_FIX,
        )
    if cfg.system is None:
        raise RepresentError("boot=ISCSI= needs a system locator", fix="give --system LABEL=System")
    if len(cfg.targets) > 2 or (len(cfg.targets) == 2 and not cfg.storage_on_iscsi):
        raise RepresentError(
            f"{len(cfg.targets)} targets: boot= and disk= name at most two (the second only for storage)",
            fix="keep one target, or use --storage-on-iscsi for a second one",
        )
    for target in cfg.targets:
        if target.lun is not None:
            warnings.append(
                f"LUN {target.lun} of {target.name} is not part of the boot=ISCSI= form: "
                "the boot logs in to the target and finds its file systems by label on any LUN"
            )
    tokens.append(
        _token("boot", f"ISCSI={spec(cfg.initiator, cfg.targets[0])},{_locator_text(cfg.system, 'system')}")
    )
    if cfg.storage is not None:
        storage = _locator_text(cfg.storage, "storage")
        if cfg.storage_on_iscsi:
            target = cfg.targets[1] if len(cfg.targets) > 1 else cfg.targets[0]
            tokens.append(_token("disk", f"ISCSI={spec(cfg.initiator, target)},{storage}"))
        else:
            tokens.append(_token("disk", storage))
    return tokens, warnings


def _dhcp_tokens(cfg: BootConfig) -> list[str]:
    """``boot=ISCSI=dhcp,<system>``, ``disk=``, and the initiator as its own ``iscsi_initiator=``."""
    if cfg.initiator is None:
        raise RepresentError(
            "the target from the DHCP root path needs an initiator name on the command line",
            fix="give --initiator iqn.YYYY-MM.<domain>:<name>",
        )
    if cfg.system is None:
        raise RepresentError("boot=ISCSI=dhcp needs a system locator", fix="give --system LABEL=System")
    tokens = [
        _token("boot", f"ISCSI=dhcp,{_locator_text(cfg.system, 'system')}"),
        f"iscsi_initiator={_spec_value(cfg.initiator, 'initiator name')}",
    ]
    if cfg.storage is not None:
        storage = _locator_text(cfg.storage, "storage")
        tokens.append(_token("disk", f"ISCSI=dhcp,{storage}" if cfg.storage_on_iscsi else storage))
    return tokens


def _finish_line(tokens: Sequence[str], warnings: list[str], cfg: BootConfig) -> None:
    if any(bad_char(token) is not None for token in tokens):  # every value was checked on its own
        raise RepresentError("a value on the kernel command line has a control or line-separator character")
    option = _left_over(tokens)
    if option in ("boot=", "disk="):
        raise RepresentError(
            f"@UID@ after the white space in the {option} value would stay as written: the agent "
            "replaces it only up to white space",
            fix="write the label without white space, or without @UID@",
        )
    if option is not None:
        raise RepresentError(
            f"@UID@ in {option} would stay as written: LibreELEC's init and the agent replace it only "
            "in the boot= and disk= values",
            fix="write that value without @UID@",
        )
    length = len(uid.substitute(" ".join(tokens), "0" * uid.LONGEST))
    if length >= COMMAND_LINE_MAX:
        warnings.append(f"the command line has {length} bytes; x86 kernels take {COMMAND_LINE_MAX - 1}")
    if cfg.secrets():
        warnings.append(_PROC_WARNING)
        for secret in cfg.secrets():
            if len(secret) < CHAP_MIN_ADVISED:
                warnings.append(
                    f"a CHAP secret has {len(secret)} characters; RFC 3720 asks for at least "
                    f"{CHAP_MIN_ADVISED} and some targets refuse shorter ones"
                )
                break


def cmdline(cfg: BootConfig) -> Generated:
    """The ``ip=... boot=ISCSI=... disk=...`` fragment for the kernel command line (APPEND)."""
    tokens, warnings = _cmdline_tokens(cfg)
    _finish_line(tokens, warnings, cfg)
    return Generated(" ".join(tokens), tuple(warnings), cfg.secrets())


def extlinux(
    cfg: BootConfig,
    *,
    kernel: str = "/KERNEL",
    initrd: str | None = None,
    append_extra: Sequence[str] = ("quiet",),
    serial: bool = False,
) -> Generated:
    """A complete extlinux.conf in OpenELEC's layout (``serial`` adds the serial console)."""
    tokens, warnings = _cmdline_tokens(cfg)
    for token in append_extra:
        check_text(token, "kernel parameter (--append)")
        if token.count('"') % 2:
            raise RepresentError(
                f"the kernel parameter (--append) {token!r} has an unbalanced '\"'",
                fix="the kernel would read the rest of the line as one value: close the quote",
            )
    tokens += list(append_extra)
    if serial:
        tokens.append("console=ttyS0,115200")
    for value, what in ((kernel, "kernel"), (initrd, "initrd")):
        if value is not None:
            check_text(value, f"{what} path (--{what})")
        if value is not None and (not value or any(c.isspace() for c in value)):
            raise RepresentError(
                f"the {what} path {value!r} is empty or has white space", fix="rename the file"
            )
        if value is not None and uid.PLACEHOLDER in value:
            raise RepresentError(
                f"the {what} path {value!r} holds @UID@, which syslinux does not replace",
                fix="one kernel and initrd for every client: write the path without @UID@",
            )
    _finish_line(tokens, warnings, cfg)
    lines = []
    if serial:
        lines.append("SERIAL 0 115200")
    lines += ["DEFAULT linux", "PROMPT 0", "", "LABEL linux", f"  KERNEL {kernel}"]
    if initrd is not None:
        lines.append(f"  INITRD {initrd}")
    lines.append(f"  APPEND {' '.join(tokens)}")
    return Generated("\n".join(lines) + "\n", tuple(warnings), cfg.secrets())


def dracut(cfg: BootConfig) -> Generated:
    """dracut's form: ``rd.iscsi.*`` and ``netroot=iscsi:...`` (credentials in the root path)."""
    if cfg.storage_on_iscsi:
        raise RepresentError("dracut has no storage-on-iSCSI form", fix="use the cmdline or extlinux form")
    net = cfg.network
    written = [cfg.initiator, str(cfg.system or ""), net.hostname, net.device]
    if any(uid.PLACEHOLDER in (value or "") for value in written) or any(_has_uid(t) for t in cfg.targets):
        raise RepresentError(
            "dracut's form cannot carry @UID@: dracut replaces it nowhere (LibreELEC's init and the "
            "agent replace it in boot= and disk= values)",
            fix="use the cmdline or extlinux form, or write the values without @UID@",
        )
    warnings = _check_names(cfg)
    tokens = _net_tokens(cfg)
    if cfg.storage is not None:
        warnings.append("dracut has no storage file system; the storage locator is left out")
    if cfg.firmware:
        tokens.append("rd.iscsi.firmware=1")
    if cfg.target_from_dhcp:
        tokens.append("netroot=dhcp6" if cfg.network.mode is NetMode.DHCP6 else "netroot=dhcp")
    if cfg.initiator is not None:
        tokens.append(f"rd.iscsi.initiator={_spec_value(cfg.initiator, 'initiator name')}")
    groups = {t.group for t in cfg.targets}
    if len(groups) > 1:
        raise RepresentError(
            "targets with different portal groups", fix="dracut takes one rd.iscsi.target.group"
        )
    tokens += [f"netroot={format_root_path(t, credentials=True)}" for t in cfg.targets]
    if groups and groups != {DEFAULT_GROUP}:
        tokens.append(f"rd.iscsi.target.group={groups.pop()}")
    if cfg.system is not None:
        tokens.append(_token("root", _locator_text(cfg.system, "system")))
    _finish_line(tokens, warnings, cfg)
    return Generated(" ".join(tokens), tuple(warnings), cfg.secrets())


# ---------------------------------------------------------------- RFC 4173 and iPXE


def root_path(
    cfg_or_target: BootConfig | Target, *, credentials: bool = False, empty_auth: bool = True
) -> Generated:
    """The RFC 4173 root path (DHCP option 17) of the boot target.

    Without ``credentials`` (the default) it names only the portal, LUN and
    target; with them it uses dracut's ``user:pass[:ruser:rpass]@`` prefix.
    A target name with ``@`` goes after dracut's empty credentials part
    (``iscsi:@...``) unless ``empty_auth`` is False (iPXE's form).
    """
    warnings: list[str] = []
    if isinstance(cfg_or_target, Target):
        target = cfg_or_target
    else:
        if not cfg_or_target.targets:
            raise RepresentError(
                "a root path needs a target (the model has none)",
                fix="give --target-name and --target-ip (firmware mode has no root path)",
            )
        target = cfg_or_target.targets[0]
        if len(cfg_or_target.targets) > 1:
            warnings.append(f"the root path names the boot target only ({target.name})")
    if _has_uid(target, credentials=credentials):
        raise RepresentError(
            "a root path cannot carry @UID@: it reaches every client alike (DHCP option 17, dracut's "
            "netroot=) and nothing replaces @UID@ there (LibreELEC's init and the agent: only in boot= "
            "and disk= values)",
            fix="write the target name without @UID@; for several HTPCs, generate dnsmasq --clients FILE "
            "writes a root path per MAC",
        )
    _check_name(target.name, "target name (--target-name)", at_sign=True)
    if "@" in target.name:
        warnings.append(AT_SIGN_WARNING.format(name=target.name))
    if target.group != DEFAULT_GROUP:
        warnings.append(f"the portal group {target.group} is not part of a root path")
    text = format_root_path(target, credentials=credentials, empty_auth=empty_auth)
    secrets = target.secrets() if credentials else ()
    return Generated(text, tuple(warnings), secrets)


def _ipxe_value(value: str, what: str, *, secret: bool = False) -> str:
    """A CHAP name or secret as one iPXE word (refused when iPXE would read it otherwise)."""
    check_credential(value, what)
    return check_word(value, what, secret=secret)


def _embed_comment_path(path: str) -> str:
    """``path`` for the ``make ... EMBED=`` comment: one line, quoted for the shell."""
    check_text(path, "script path (-o)")
    return shlex.quote(path)


def ipxe(
    cfg: BootConfig,
    *,
    embedded: bool = False,
    embed_path: str = "boot.ipxe",
    attempts: int | None = None,
) -> Generated:
    """The iPXE script that sanboots the boot target, retrying until it works.

    Chain-loaded form (iPXE has done DHCP) or, with ``embedded``, the form
    built into a ROM with its own ``dhcp`` retry loop.  A comment gives the
    ``make`` commands that embed the script (``embed_path``).  ``attempts``
    bounds the sanboot tries (then the script exits with failure, so that a
    script which chained it regains control); None retries for ever.

    iPXE's script syntax has no quoting or escape (:mod:`iscsiboot.cmdline.ipxescript`),
    so nothing is quoted: a value that iPXE would read otherwise is refused.
    CHAP names and secrets must not start with ``#`` (a comment), be ``||``,
    ``&&`` or ``;`` (the end of a command), hold ``${`` (a setting expansion)
    or end in ``\\`` (a continued line); initiator and target names (the
    storage target's too) hold only RFC 3722's letters, digits, ``-``, ``.``
    and ``:`` (a target name ``@`` too).  ``embed_path`` goes into the comment quoted for the shell
    (``make`` is run from one), and is refused when it has a control or
    line-separator character.
    """
    if attempts is not None and not 1 <= attempts <= 20:
        raise RepresentError(f"{attempts} sanboot attempts", fix="use 1-20, or retry for ever")
    if not cfg.targets:
        raise RepresentError(
            "iPXE needs the target to sanboot (the model has none)",
            fix="give --target-name and --target-ip; iPXE then writes the iBFT that auto mode reads",
        )
    boot = cfg.targets[0]
    warnings: list[str] = []
    if boot.lun is None:
        warnings.append(
            "no LUN given: iPXE uses LUN 0, the disk on LIO (Synology, QNAP, TrueNAS SCALE) and istgt, "
            "but tgt's controller (tgt serves its disk at LUN 1); iscsiboot doctor lists the target's "
            "LUNs: give --lun"
        )
    warnings += _check_names(cfg)
    # every check looks at the values as one client sees them; the script then says @UID@ in iPXE's words
    uris: list[str] = []
    for i, target in enumerate(cfg.targets):
        sample = _sample_target(target)
        checked = root_path(sample, empty_auth=False)
        if i == 0:
            warnings += [w for w in checked.warnings if w not in warnings]
        check_word(checked.text, "root path" if i == 0 else "storage root path")
        assert checked.text.endswith(":" + sample.name)  # the name ends the URI
        uris.append(checked.text[: len(checked.text) - len(sample.name)] + _ipxe_text(target.name))
    uri, hooks = uris[0], uris[1:]
    embed = _embed_comment_path(embed_path)
    lines = [
        "#!ipxe",
        f"# iSCSI boot of {boot.name} at {boot.portal} ({'embedded' if embedded else 'chain-loaded'} form)",
        "# Build it into an iPXE image from the iPXE sources (ipxe/src):",
        f"#   make bin/ipxe.usb EMBED={embed}",
        f"#   make bin/undionly.kpxe EMBED={embed}",
    ]
    if embedded:
        lines += [":retry_dhcp", "dhcp || goto retry_dhcp"]
    lines.append("echo Ready for iSCSI boot")
    if cfg.initiator is not None:
        check_word(_sample(cfg.initiator), "initiator name (--initiator)")
        lines.append(f"set initiator-iqn {_ipxe_text(cfg.initiator)}")
    chaps = {(t.chap, t.reverse_chap) for t in cfg.targets}
    if len(chaps) > 1:
        raise RepresentError(
            "the targets have different credentials; iPXE has one set",
            fix="use the same CHAP credentials on both targets",
        )

    def chap_word(value: str, what: str, *, secret: bool = False) -> str:
        _ipxe_value(_sample(value), what, secret=secret)
        return _ipxe_text(value)

    if boot.chap is not None:
        user = chap_word(boot.chap.username, "CHAP user name (--username)")
        secret = chap_word(boot.chap.password.reveal(), "CHAP secret (--password)", secret=True)
        lines += [f"set username {user}", f"set password {secret}"]
    if boot.reverse_chap is not None:
        user = chap_word(boot.reverse_chap.username, "reverse CHAP user name (--reverse-username)")
        secret = chap_word(
            boot.reverse_chap.password.reveal(), "reverse CHAP secret (--reverse-password)", secret=True
        )
        lines += [f"set reverse-username {user}", f"set reverse-password {secret}"]
    for extra, hook in zip(cfg.targets[1:], hooks, strict=True):
        lines += [
            f"# storage target {extra.name}: attached as a second SAN drive",
            f"sanhook --drive 0x81 {hook} || echo could not attach {_ipxe_text(extra.name)}",
        ]
    if attempts is None:
        lines += [":retry_sanboot", f"sanboot {uri} || goto retry_sanboot"]
    else:
        tries = " || ".join([f"sanboot {uri}"] * attempts)
        lines += [f"{tries} || goto sanboot_failed", ":sanboot_failed", "echo sanboot failed", "exit 1"]
    if any(IPXE_UID in line for line in lines):
        warnings.append(IPXE_UID_WARNING)
    return Generated("\n".join(lines) + "\n", tuple(warnings), cfg.secrets())


def dnsmasq(
    cfg: BootConfig,
    *,
    interface: str | None = None,
    dhcp_range: str | None = None,
    tftp_root: str = "/srv/tftp",
    script: str = "boot.ipxe",
    bios_image: str = "undionly.kpxe",
    efi_image: str = "ipxe.efi",
    dns: bool = True,
) -> Generated:
    """A dnsmasq configuration: PXE clients get iPXE, iPXE gets the script, the rest option 17.

    Requests from iPXE are recognised by option 175 or the user class
    ``iPXE``; PXE clients get ``bios_image`` or, by client architecture
    (option 93: 7 and 9 are x86-64 UEFI), ``efi_image``.  Values that dnsmasq
    would read as syntax (:func:`iscsiboot.cmdline.syntax.check_dnsmasq`) and a
    root path over 255 bytes are refused.  A boot target whose name holds
    ``@UID@`` gets no root path (a warning says why): dnsmasq would send the
    same text to every client and the agent does not replace ``@UID@`` in it.
    """
    warnings: list[str] = []
    if not cfg.targets:
        raise RepresentError(
            "the DHCP root path needs a target (the model has none)",
            fix="give --target-name and --target-ip",
        )
    warnings += _check_names(cfg)
    per_client = _has_uid(cfg.targets[0], credentials=False)
    uri = root_path(replace(cfg, targets=(_sample_target(cfg.targets[0]), *cfg.targets[1:])))
    warnings += [w for w in uri.warnings if w not in warnings]
    size = len(uri.text.encode("utf-8"))
    if size > DHCP_OPTION_MAX:
        raise RepresentError(
            f"the root path has {size} bytes; DHCP option 17 holds at most {DHCP_OPTION_MAX}",
            fix="use a shorter target name or a host address instead of a long host name",
        )
    for value, what in (
        (interface, "interface (--interface)"),
        (tftp_root, "TFTP root (--tftp-root)"),
        (script, "script name (--script)"),
        (bios_image, "BIOS image"),
        (efi_image, "EFI image"),
    ):
        if value is not None:
            check_dnsmasq(value, what)
    if dhcp_range is not None:
        check_dnsmasq(dhcp_range, "DHCP range (--dhcp-range)", commas=True)
    if dhcp_range is None:
        dhcp_range = "192.168.1.100,192.168.1.200,12h"
        warnings.append(f"no DHCP range given; the example range {dhcp_range} is written (--dhcp-range)")
    lines = ["# dnsmasq: DHCP and TFTP for iPXE iSCSI boot", ""]
    if not dns:
        lines += ["# DHCP and TFTP only", "port=0"]
    if interface is not None:
        lines += [f"interface={interface}", "bind-interfaces"]
    lines += [
        f"dhcp-range={dhcp_range}",
        "enable-tftp",
        f"tftp-root={tftp_root}",
        "",
        "# Requests from iPXE: option 175 (iPXE encapsulated options) or user class iPXE",
        "dhcp-match=set:ipxe,175",
        "dhcp-userclass=set:ipxe,iPXE",
        "# PXE clients by architecture (option 93): 7 and 9 are x86-64 UEFI",
        "dhcp-match=set:efi64,option:client-arch,7",
        "dhcp-match=set:efi64,option:client-arch,9",
        "",
        "# PXE ROMs load iPXE; iPXE loads the boot script",
        f"dhcp-boot=tag:!ipxe,tag:!efi64,{bios_image}",
        f"dhcp-boot=tag:!ipxe,tag:efi64,{efi_image}",
        f"dhcp-boot=tag:ipxe,{script}",
        "",
    ]
    if per_client:
        warnings.append(ROOT_PATH_UID_WARNING)
        lines.append("# No root path (option 17): the target name holds @UID@, one name per client")
    else:
        lines += [
            "# RFC 4173 root path (option 17) of the boot target, not for iPXE (its script logs in)",
            dnsmasq_root_path_line(uri.text),
        ]
    if cfg.network.mode is NetMode.FIRMWARE:
        warnings.append("the model takes its network from the iBFT; the DHCP server still serves iPXE")
    return Generated("\n".join(lines) + "\n", tuple(warnings), ())
