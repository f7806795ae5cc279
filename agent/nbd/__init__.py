"""The NBD transport: the project's own iSCSI initiator serves the LUN to the kernel as ``/dev/nbdN``.

For kernels without iSCSI but with the NBD client (``CONFIG_BLK_DEV_NBD``):
:mod:`.daemon` is the resident process that logs in, attaches a socket pair
to ``/dev/nbdN`` (:mod:`.device`) and answers the kernel's requests
(:mod:`.server`, :mod:`.protocol`) through the iSCSI session
(:mod:`.iscsi_backend`).  The agent starts it through
:mod:`iscsiboot.agent.backends.nbd`.
"""
