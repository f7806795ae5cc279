"""iscsiboot.iscsi: a pure-Python iSCSI initiator.

Sans-I/O protocol core, reusable by any transport (a socket here, the
kernel's PDU channel elsewhere):

* :mod:`~iscsiboot.iscsi.pdu`: PDU framing, CRC32C digests, serial numbers.
* :mod:`~iscsiboot.iscsi.text`: ``key=value`` data and operational negotiation.
* :mod:`~iscsiboot.iscsi.chap`: CHAP responses (MD5) and their checks.
* :mod:`~iscsiboot.iscsi.login`: the login state machine, its failures, redirects.
* :mod:`~iscsiboot.iscsi.status`: what each login status means (name, cause, text, fix).
* :mod:`~iscsiboot.iscsi.scsi`: CDBs and answers (INQUIRY and VPD pages, REPORT LUNS,
  READ CAPACITY, READ, WRITE, SYNCHRONIZE CACHE, UNMAP, the block limits).
* :mod:`~iscsiboot.iscsi.task`: the PDUs of one SCSI task (immediate, unsolicited and
  R2T-solicited Data-Out).

I/O: :mod:`~iscsiboot.iscsi.transport` (blocking TCP with deadlines) and
:mod:`~iscsiboot.iscsi.session` (login and reinstatement, SendTargets, reads and
writes, NOP-In, logout).
The diagnostics built on it (``iscsiboot doctor``, ``discover``) are :mod:`iscsiboot.doctor`.
"""
