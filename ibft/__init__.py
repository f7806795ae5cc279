"""iscsiboot.ibft: the iSCSI Boot Firmware Table, read and written.

- :mod:`iscsiboot.ibft.table`: pure code: parse (``construct`` layouts, one
  clear error per defect), build (iPXE's layout), the kernel's
  ``/sys/firmware/ibft`` view, and the mapping to and from the boot model.
- :mod:`iscsiboot.ibft.sources`: where a table comes from: a file, ACPI, the
  legacy low-memory scan (``/dev/mem`` or a dump), the kernel's sysfs tree.
- :mod:`iscsiboot.ibft.render`: the full JSON form (both ways) and the text
  explanation.
- :mod:`iscsiboot.ibft.cli`: ``iscsiboot ibft show`` and ``iscsiboot ibft build``.
"""
