"""Kernel command lines for iSCSI boot, both ways.

* :mod:`iscsiboot.cmdline.parse`: ``tokenize`` and ``parse`` (OpenELEC
  ``boot=ISCSI=``, Debian ``iscsi_*``, dracut ``rd.iscsi.*``, RFC 4173 root
  paths, ``ip=``) into :class:`iscsiboot.model.BootConfig`.
* :mod:`iscsiboot.cmdline.generate`: command line, extlinux.conf, iPXE
  script, dnsmasq configuration, root path, dracut form.
* :mod:`iscsiboot.cmdline.ipconf`, :mod:`iscsiboot.cmdline.rootpath`,
  :mod:`iscsiboot.cmdline.chap`: ``ip=``, RFC 4173 root paths, CHAP rules.
* :mod:`iscsiboot.cmdline.options`: the model options other commands reuse.
* :mod:`iscsiboot.cmdline.cli`: ``iscsiboot cmdline parse`` and ``iscsiboot generate``.
"""
