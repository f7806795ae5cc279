"""iscsiboot.initramfs"""
