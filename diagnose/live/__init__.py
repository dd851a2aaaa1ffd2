"""Live findings: the rules judged while a run is recorded, and what happens when one fires.

`diagnose.watch(..., stop_on=..., on_finding=..., status=...)` creates a
`LiveMonitor` (:mod:`diagnose.live.monitor`) next to its probes. Records the
watch writes also go into a bounded `RunSketch`; the rules that declare
``live = True`` are run on it now and then, cheaply, and each finding they
make is announced once (logger ``diagnose``, `DiagnoseWarning`), written to
the run file as a ``finding`` event (so that the report says when it was
first seen), handed to ``on_finding`` and checked against ``stop_on``,
which ends training at the next step boundary with `TrainingStopped`.

To make a rule live, set ``live = True`` on its class: its ``check`` then
runs on the sketch of a run in progress, so it must say nothing on a run
that is merely unfinished (a curve that has not yet fallen far, a warm-up
that has not ended).
"""

# The monitor imports torch; it is left to `diagnose.live.monitor` so that this package does not.
from diagnose.live.policy import DiagnoseWarning, StopPolicy, TrainingStopped, announcement
from diagnose.live.sketch import RunSketch

__all__ = ["DiagnoseWarning", "RunSketch", "StopPolicy", "TrainingStopped", "announcement"]
