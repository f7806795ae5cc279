"""Several HTPCs on one NAS: the clients file, one model per client, one dnsmasq configuration.

The clients file has one line per HTPC, fields separated by white space::

    # MAC               name    target or LUN                      credentials file
    52:54:00:00:00:01   htpc1   1
    52:54:00:00:00:02   htpc2   iqn.2026-11.org.example:htpc2      htpc2.chap

* MAC: the boot NIC's address (``aa:bb:cc:dd:ee:ff``);
* name: the host name and dnsmasq tag (letters, digits, ``-``; it also names
  the client's iPXE script, ``<name>.ipxe``);
* target or LUN: digits are a LUN of the model's target, anything else a target
  name at the model's portal;
* credentials file (optional): its first line the CHAP user name, its second
  the secret; without it the client uses the model's credentials.

Each client gets the model's initiator name with ``.<name>`` appended, so the
target can tell them apart (its ACL names each).  LibreELEC's ``@UID@`` in
the model (or in a client's target name) becomes the client's id as the
agent computes it on a machine without a CPU serial (x86): its MAC in
lower-case hex without colons (:func:`iscsiboot.cmdline.uid.client_uid`), so
each client's script and root path name its own values.  Pure: reading the files is
the caller's (:func:`parse_clients` takes text, :func:`client_configs` takes
the credentials already read).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

from iscsiboot.cmdline import generate, uid
from iscsiboot.cmdline.dhcproot import dnsmasq_root_path_line
from iscsiboot.cmdline.syntax import check_dnsmasq
from iscsiboot.errors import ParseError, RepresentError
from iscsiboot.model import BootConfig, Chap, Locator, Target
from iscsiboot.secret import Secret

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")


@dataclass(frozen=True)
class Client:
    """One line of the clients file."""

    mac: str  # lower case, colons
    name: str
    lun: int | None = None
    target_name: str | None = None
    credentials: str | None = None  # the credentials file's path, as written

    @property
    def script(self) -> str:
        """The client's iPXE script file name."""
        return f"{self.name}.ipxe"


def parse_clients(text: str, *, where: str = "clients file") -> tuple[Client, ...]:
    """The clients of ``text``; ParseError names the line of the first mistake."""
    clients: list[Client] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        at = f"{where} line {number}"
        fields = line.split()
        if not 3 <= len(fields) <= 4:
            raise ParseError(
                f"{len(fields)} fields, expected 3 or 4",
                where=at,
                fix="write: MAC NAME TARGET-OR-LUN [CREDENTIALS]",
            )
        mac, name, target = fields[0].lower(), fields[1], fields[2]
        if not _MAC.match(mac):
            raise ParseError(f"{fields[0]!r} is not a MAC address", where=at, fix="write aa:bb:cc:dd:ee:ff")
        if not _NAME.match(name):
            raise ParseError(
                f"client name {name!r} is not usable",
                where=at,
                fix="use 1-32 lower-case letters, digits or '-'",
            )
        credentials = fields[3] if len(fields) == 4 else None
        if credentials is not None:
            check_dnsmasq(credentials, f"credentials file ({at})")
        if target.isdigit():
            client = Client(mac, name, lun=int(target), credentials=credentials)
        else:
            client = Client(mac, name, target_name=target, credentials=credentials)
        for earlier in clients:
            if earlier.mac == client.mac or earlier.name == client.name:
                raise ParseError(
                    f"{client.name} ({client.mac}) is listed twice", where=at, fix="list each once"
                )
        clients.append(client)
    if not clients:
        raise ParseError("no clients", where=where, fix="write one line per HTPC: MAC NAME TARGET-OR-LUN")
    return tuple(clients)


def parse_credentials(text: str, *, where: str) -> Chap:
    """A credentials file: first line the CHAP user name, second line the secret."""
    lines = [line.strip() for line in text.splitlines()]
    if len(lines) < 2 or not lines[0] or not lines[1]:
        raise ParseError(
            "a credentials file needs two lines", where=where, fix="write the user name, then the secret"
        )
    return Chap(lines[0], Secret(lines[1]))


def for_client(cfg: BootConfig, client: Client) -> BootConfig:
    """``cfg`` with every ``@UID@`` replaced by ``client``'s id (its MAC without colons)."""
    ident = uid.client_uid("", client.mac)

    def text(value: str) -> str:
        return value.replace(uid.PLACEHOLDER, ident)

    def chap(c: Chap | None) -> Chap | None:
        return None if c is None else Chap(text(c.username), Secret(text(c.password.reveal())))

    def locator(where: Locator | None) -> Locator | None:
        return None if where is None else replace(where, value=text(where.value))

    targets = tuple(
        replace(t, name=text(t.name), chap=chap(t.chap), reverse_chap=chap(t.reverse_chap))
        for t in cfg.targets
    )
    network = cfg.network
    if network.hostname is not None:
        network = replace(network, hostname=text(network.hostname))
    return replace(
        cfg,
        targets=targets,
        initiator=None if cfg.initiator is None else text(cfg.initiator),
        system=locator(cfg.system),
        storage=locator(cfg.storage),
        network=network,
    )


def client_config(model: BootConfig, client: Client, chap: Chap | None = None) -> BootConfig:
    """The model of one client: its target or LUN, its credentials, its own initiator name, its id
    in place of ``@UID@``."""
    if not model.targets:
        raise RepresentError("the clients need the NAS's target", fix="give --target-ip and --target-name")
    base = model.targets[0]
    target: Target = replace(
        base,
        name=client.target_name or base.name,
        lun=client.lun if client.lun is not None else base.lun,
        chap=chap if chap is not None else base.chap,
    )
    initiator = f"{model.initiator}.{client.name}" if model.initiator is not None else None
    return for_client(replace(model, targets=(target, *model.targets[1:]), initiator=initiator), client)


def client_configs(
    model: BootConfig, clients: tuple[Client, ...], credentials: Mapping[str, Chap]
) -> tuple[tuple[Client, BootConfig], ...]:
    """Every client with its model (``credentials``: each credentials file's path, read)."""
    return tuple(
        (c, client_config(model, c, credentials.get(c.credentials) if c.credentials else None))
        for c in clients
    )


def dnsmasq(
    configs: tuple[tuple[Client, BootConfig], ...],
    *,
    interface: str | None = None,
    dhcp_range: str | None = None,
    tftp_root: str = "/srv/tftp",
    script: str = "boot.ipxe",
    dns: bool = True,
) -> generate.Generated:
    """``generate dnsmasq --clients``: the shared part, then one block per HTPC.

    Per client: its ``dhcp-host`` with a tag of its name, its script for
    iPXE (``<name>.ipxe``), its root path for the rest.  There is no script
    and no root path for a machine that is not listed: a stranger boots no
    one's disk.  The options are those of :func:`iscsiboot.cmdline.generate.dnsmasq`.
    """
    if not configs:
        raise RepresentError("no clients", fix="list one HTPC per line in the clients file")
    configs = tuple((client, for_client(cfg, client)) for client, cfg in configs)
    first = generate.dnsmasq(
        configs[0][1], interface=interface, dhcp_range=dhcp_range, tftp_root=tftp_root, script=script, dns=dns
    )
    shared_root = dnsmasq_root_path_line(generate.root_path(configs[0][1]).text)
    lines = [
        line
        for line in first.text.splitlines()
        if line not in (f"dhcp-boot=tag:ipxe,{script}", shared_root) and not line.startswith("# RFC 4173")
    ]
    warnings = list(first.warnings)
    lines.append("# One block per HTPC: its tag, its iPXE script, its root path (option 17)")
    for client, cfg in configs:
        uri = generate.root_path(cfg)
        warnings += [w for w in uri.warnings if w not in warnings]
        lines += [
            f"# {client.name}",
            f"dhcp-host={client.mac},set:{client.name},{client.name}",
            f"dhcp-boot=tag:ipxe,tag:{client.name},{client.script}",
            dnsmasq_root_path_line(uri.text).replace("dhcp-option=", f"dhcp-option=tag:{client.name},", 1),
        ]
    return generate.Generated("\n".join(lines) + "\n", tuple(warnings), ())
