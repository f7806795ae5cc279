"""iscsiboot: the client side of diskless iSCSI network boot."""

__version__ = "0.1.0"
