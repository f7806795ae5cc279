"""Login backends: how the login phase creates the kernel's iSCSI sessions.

:mod:`.result` holds what every backend returns (:class:`~.result.LoginResult`,
its :class:`~.result.Cause`) and the :class:`~.result.LoginBackend` interface;
:mod:`.kernel` logs in itself and hands the session to the kernel over
NETLINK_ISCSI (the default); :mod:`.iscsistart` runs open-iscsi's tool.
"""
