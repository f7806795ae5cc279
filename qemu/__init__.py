"""iscsiboot.qemu: boot scenarios in QEMU (TCG) through iPXE sanboot or a direct kernel boot.

The target is a tgtd on loopback (the guest reaches it at 10.0.2.2).

* :mod:`.scenario`: pure planning (options -> QEMU argv, APPEND line, target, iPXE script),
* :mod:`.runner`: the QEMU process and a follower of its console file,
* :mod:`.system`: the test SYSTEM squashfs and its console report,
* :mod:`.artifacts`: kernel, initramfs (full or overlay) and SYSTEM, cached,
* :mod:`.harness`: one real run with clean-up on every path,
* :mod:`.outcome`: the verdict read from the console (the agent's ``ISCSIBOOT-RESULT``),
* :mod:`.tgt`: tgtd on loopback,
* :mod:`.cli`: ``iscsiboot qemu boot`` and ``iscsiboot qemu demo``.
"""
