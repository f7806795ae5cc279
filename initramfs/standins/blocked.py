"""Stand-in that refuses its import, as a module missing from the image would.

Copied under each name of :data:`iscsiboot.initramfs.pyruntime.BLOCKED` into the
trace's staging folder only: it shapes the trace, and the image lacks the module.
"""

raise ImportError(f"{__name__} is not part of the iscsiboot initramfs")
