"""Stand-in for a module the libraries import at the top but never call at boot.

Copied under each name of :data:`iscsiboot.initramfs.pyruntime.UNUSED`.  Every
attribute is a function that fails loudly when called.
"""


def __getattr__(attr: str) -> object:
    if attr.startswith("__"):
        raise AttributeError(attr)

    def missing(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f"{__name__}.{attr} is not part of the iscsiboot initramfs")

    return missing
