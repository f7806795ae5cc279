"""iscsiboot.iscsi"""
