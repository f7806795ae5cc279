"""Stand-in for ssl in the iscsiboot initramfs, which carries no TLS library.

pyroute2 imports ssl only for a probe the agent never runs; asyncio needs a few names
(it checks ``isinstance(sock, ssl.SSLSocket)`` in every ``sock_*`` call).
"""

CERT_NONE, CERT_OPTIONAL, CERT_REQUIRED = 0, 1, 2
HAS_SNI = False
MISSING = "TLS is not available in the initramfs"


class SSLError(OSError):
    pass


class SSLWantReadError(SSLError):
    pass


class SSLWantWriteError(SSLError):
    pass


class SSLSyscallError(SSLError):
    pass


class SSLZeroReturnError(SSLError):
    pass


class SSLEOFError(SSLError):
    pass


class CertificateError(ValueError):
    pass


class SSLContext:
    def __init__(self, *args: object, **kwargs: object) -> None:
        raise SSLError(MISSING)


class SSLObject:
    pass


class SSLSocket:
    pass


class MemoryBIO:
    def __init__(self) -> None:
        raise SSLError(MISSING)


def create_default_context(*args: object, **kwargs: object) -> SSLContext:
    raise SSLError(MISSING)
