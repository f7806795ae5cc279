"""Stand-in for unittest.mock in the iscsiboot initramfs (pyroute2 makes one Mock at class definition)."""


class Mock:
    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __getattr__(self, attr: str) -> object:
        raise AttributeError(f"unittest.mock is not part of the iscsiboot initramfs ({attr})")
