"""Stand-ins for standard modules in lean images.

The builder copies each file here under a standard module's name into the
trace's staging folder (:func:`iscsiboot.initramfs.pyruntime.add_lean`), and
from there into the image.  Their own names differ from the modules they
stand for, so that nothing on the host imports them by accident.
"""
