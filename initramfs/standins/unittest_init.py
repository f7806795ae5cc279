"""Stand-in for unittest in the iscsiboot initramfs: only unittest.mock.Mock is there."""
