"""iscsiboot.qemu"""
