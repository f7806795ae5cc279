"""PID 1's start-up machinery: the work that runs before and beside the phases.

:mod:`.early` (the start-up thread: module index, base modules, boot clock),
:mod:`.netproc` (the start-up child and the network worker, and their pipe
protocol), :mod:`.codecache` (dataclass code compiled at build time) and
:mod:`.pyroute` (pyroute2 without its heavy package ``__init__``).
"""
