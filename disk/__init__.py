"""iscsiboot.disk"""
