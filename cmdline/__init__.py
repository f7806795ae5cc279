"""iscsiboot.cmdline"""
