"""iscsiboot.ibft: the iSCSI Boot Firmware Table, read and written.

Pure code:

- :mod:`iscsiboot.ibft.types`: the constants and structures (no ``construct``);
  :mod:`iscsiboot.ibft.codec`: the field encodings (addresses, PCI, strings).
- :mod:`iscsiboot.ibft.layouts`: the structures as ``construct`` layouts, imported
  only where a raw table is parsed or built.
- :mod:`iscsiboot.ibft.parse`: parse a table, one clear error per defect.
- :mod:`iscsiboot.ibft.build`: iPXE's layout and a table's bytes.
- :mod:`iscsiboot.ibft.sysfs`: the kernel's ``/sys/firmware/ibft`` view.
- :mod:`iscsiboot.ibft.mapping`: a table as the boot model, and a model as a table.

I/O and presentation:

- :mod:`iscsiboot.ibft.sources`: where a table comes from: a file, ACPI, the
  legacy low-memory scan (``/dev/mem`` or a dump), the kernel's sysfs tree.
- :mod:`iscsiboot.ibft.render`: the full JSON form (both ways) and the text
  explanation.
- :mod:`iscsiboot.ibft.cli`: ``iscsiboot ibft show`` and ``iscsiboot ibft build``.
"""
