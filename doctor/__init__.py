"""iscsiboot.doctor: ``iscsiboot doctor`` and ``iscsiboot discover``, from any Linux machine.

* :mod:`~iscsiboot.doctor.checks` runs the ordered boot checks over the
  :mod:`iscsiboot.iscsi` initiator, and :func:`~iscsiboot.doctor.checks.explain_login`
  explains a failed login in plain words (the boot agent asks it after a failed login).
* :mod:`~iscsiboot.doctor.report` holds the plan, the results and their JSON and terminal forms.
* :mod:`~iscsiboot.doctor.cli` is the two commands: the settings from the options, the output.
"""
