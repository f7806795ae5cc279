"""iscsiboot.ibft"""
