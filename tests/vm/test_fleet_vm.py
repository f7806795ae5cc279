"""Three HTPCs, one NAS, in QEMU (TCG) at the same time: ``iscsiboot qemu fleet --clients 3``.

One tgtd serves a target, a disk and a CHAP account per client; dnsmasq
(``generate dnsmasq --clients``) hands each MAC its own script (``generate
ipxe --clients``).  Every guest writes a random marker to its Storage; the
host then reads every disk and finds exactly its own guest's marker there.
The scripts name target and initiator with ``@UID@`` (iPXE's
``${netX/mac:hexraw}``): tgt serves each target under the name with its
guest's MAC only, so every boot proves that guest's iPXE filled it in.
"""

from __future__ import annotations

from pathlib import Path

from iscsiboot.qemu.artifacts import prepare
from iscsiboot.qemu.fleet import run_fleet
from vm_support import TIMINGS, require_vm


def test_three_clients_each_boot_their_own_disk(tmp_path: Path) -> None:
    require_vm()
    artifacts = prepare()
    steps: list[str] = []
    result = run_fleet(3, artifacts, timeout=300.0, progress=steps.append, keep_dir=tmp_path / "logs")
    why = f"{result.to_json()}\nsteps: {steps}\nlogs: {tmp_path / 'logs'}"
    assert result.ok, why
    assert [c.name for c in result.clients] == ["htpc1", "htpc2", "htpc3"], why
    assert all(c.marker_ok and c.mounted_s is not None for c in result.clients), why
    assert len({c.marker for c in result.clients}) == 3, why
    assert result.median_mounted_s is not None
    TIMINGS.append(("fleet of 3 (median to Storage)", result.median_mounted_s))
