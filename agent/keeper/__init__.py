"""The session keeper: a resident daemon that logs the kernel's boot sessions in again.

After the switch to the new root nothing else answers the kernel's connection
errors (a LibreELEC system has no iscsid).  The agent starts the keeper in its
handoff phase for the sessions it created (:mod:`.launch`); the keeper hardens
itself like every root storage daemon (:mod:`iscsiboot.agent.daemons`) and
recovers each failed connection as iscsid does (:mod:`.recovery`).
"""
