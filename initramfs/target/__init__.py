"""Programs the builder runs under the image's own interpreter (``/usr/bin/python3.11 -S``).

Each is a script (run by path, with ``-P``: its folder stays off ``sys.path``)
that imports only what the image carries anyway.
"""
