"""iscsiboot.agent"""
