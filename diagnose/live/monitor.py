"""The live side of a `Watch`: judge the run while it goes, announce each new finding once, apply the policy.

Two parts with different costs:

* the `Sentinel` runs at every step boundary: it looks at the step's loss
  and gradient norms, the values that turn non-finite first. On the CPU
  that is two reads of values already computed. On a CUDA device reading
  them would stall the device, so the check is copied to pinned host memory
  without waiting and read at a later step boundary, once it has landed: a
  NaN is seen one step late there, never at the price of a synchronisation.
* the rules are evaluated on the `RunSketch` (bounded, see
  :mod:`diagnose.live.sketch`) after a flush of the run file, when a
  sentinel tripped, at steps 8, 16, 32, ... (so that early problems are
  seen early), and otherwise only as often as keeps their cost under
  ``budget`` of the wall time (1% by default): an evaluation that took 20 ms
  waits at least 2 s for the next one. A judgement the sentinel asked for,
  and the last one when the watch closes, run on the training thread, so
  that ``stop_on`` stops the step that made the NaN. The others run on a
  short-lived thread of their own from a snapshot of the sketch's columns
  (building the run from them and applying the due rules took 12-41 ms of
  Python and pandas on the overhead benchmark's workloads, on a machine
  loaded 4-6 over 2 cores; parsing the kept lines, as it did before, made
  the same judgements 1.3-3 times as long), while training goes on; the
  training thread takes the verdict at a later step boundary and announces
  it from there, with the step it was judged at. At most one judgement is
  in flight, and the thread is gone between judgements; a checkpoint step
  waits for the judgement before it, so that it is judged at that step.

Which rules run live is declared by the rules themselves (``live = True``
on the rule class: those whose verdict on a run in progress means the same
as on a finished one). The live check is the rule's own ``check`` on the
sketch, so there is one decision per problem, never a second copy. A
finding is announced when a judgement at twice the step or later still
makes it (a curve rule seeing six steps can be fooled by a warm-up), or at once
for rules that declare ``live_at_once`` (a NaN cannot un-happen).

A judgement applies only the rules that can say something new: not those
already announced, not those before their ``live_after`` step, and not those
whose required inputs (`RunSketch.versions`) brought no record since the
rule was last applied; the verdicts of the others are kept from then and
ordered with the new ones, as one analysis of the whole run would.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import torch

from diagnose.live.policy import Sinks, StopPolicy, announcement
from diagnose.live.sketch import Record, RunSketch, SketchSnapshot
from diagnose.rules.base import Finding, Rule, Severity
from diagnose.rules.codes import all_rules
from diagnose.rules.config import RuleConfig
from diagnose.rules.engine import Analysis, apply_rules, arrange
from diagnose.runfile import schema

if TYPE_CHECKING:  # the probes import this module
    from diagnose.probes.record import StepRecord

_FIRST_CHECKPOINT = 8
# Notes (info) stay in the final report; only what needs action is announced while the run goes.
_ANNOUNCED = (Severity.WARNING, Severity.ERROR)


def live_codes(config: RuleConfig | None = None) -> tuple[str, ...]:
    """Codes of the rules that can judge a run in progress, as ``config`` enables them."""
    config = config or RuleConfig()
    return tuple(rule.code for rule in all_rules() if rule.live and config.enabled(rule))


def _inputs(requires: tuple[str, ...]) -> tuple[str, ...]:
    """The names in a rule's requirements (``"cuda_peak or gpu_mem_used, or events"`` names three)."""
    names = (name for requirement in requires for name in re.findall(r"[A-Za-z_][\w.]*", requirement))
    return tuple(dict.fromkeys(name for name in names if name != "or"))


class Sentinel:
    """Has any loss or gradient of a finished step turned non-finite? Without a device synchronisation."""

    def __init__(self) -> None:
        self._host: torch.Tensor | None = None
        self._landed: Any = None  # a CUDA event, recorded after the copy to ``_host``

    def tripped(self, record: StepRecord) -> bool:
        values = [*record.losses, None if record.skipped else record.grad_norms]
        found = self._arrived()
        on_device = []
        for value in values:
            if isinstance(value, torch.Tensor):
                if value.device.type == "cpu":  # one read, or a sum and a read: each op costs ~5-10 us here
                    found |= not math.isfinite(value if value.dim() == 0 else value.sum())
                elif value.device.type == "cuda":
                    on_device.append(value.detach().float().sum())
            elif value is not None and not isinstance(value, list):
                found |= not math.isfinite(value)
        if on_device and self._landed is None:
            self._send(torch.stack(on_device).sum())
        return found

    def _send(self, total: torch.Tensor) -> None:
        if self._host is None:
            self._host = torch.empty((), dtype=torch.float32, pin_memory=True)
        self._host.copy_(total, non_blocking=True)
        self._landed = torch.cuda.Event()
        self._landed.record()

    def _arrived(self) -> bool:
        if self._landed is None or not self._landed.query():
            return False
        self._landed = None
        return not math.isfinite(self._host.item())


# The judgements started off the training thread. A fork (a DataLoader starting its workers) waits
# for them first: a child forked while one runs would inherit the locks that thread holds (the
# import lock, a logging handler's), held forever there, and could hang.
_STARTED: weakref.WeakSet[_Judgement] = weakref.WeakSet()


def _finish_judgements_before_fork() -> None:
    for judgement in list(_STARTED):
        judgement.wait()


os.register_at_fork(before=_finish_judgements_before_fork)


class _Judgement:
    """The due rules applied to a snapshot of the sketch on a thread of its own (see the module docstring)."""

    def __init__(self, sketch: RunSketch, due: tuple[str, ...], rules: list[type[Rule]], config: RuleConfig) -> None:
        # What the rules will have seen: the versions of their inputs go with the snapshot.
        self.step, self.due, self.versions = sketch.latest_step, due, dict(sketch.versions)
        snapshot = sketch.snapshot()
        self.analysis: Analysis | None = None
        self.error: BaseException | None = None
        self.cost = self.cpu = 0.0
        self._thread = threading.Thread(
            target=self._run, args=(snapshot, rules, config), name="diagnose-live", daemon=True
        )
        _STARTED.add(self)
        self._thread.start()

    def _run(self, snapshot: SketchSnapshot, rules: list[type[Rule]], config: RuleConfig) -> None:
        started, cpu = time.monotonic(), time.thread_time()
        try:
            run = snapshot.run()
            self.analysis = apply_rules(run, config, rules) if run is not None else None
        except BaseException as exc:  # noqa: BLE001 - handed to the training thread, which decides
            self.error = exc
        self.cost, self.cpu = time.monotonic() - started, time.thread_time() - cpu

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def wait(self) -> None:
        if self._thread is not threading.current_thread():  # a fork from the judgement itself goes on
            self._thread.join()


class LiveMonitor:
    """Live findings for one run; the `Watch` feeds it records and asks it at each step boundary."""

    def __init__(
        self,
        name: str,
        write: Callable[[Record], None],
        *,
        stop_on: str | Iterable[str] | None = None,
        on_finding: Callable[[Finding], Any] | None = None,
        status: Any = None,
        config: RuleConfig | None = None,
        budget: float = 0.01,
        background: bool = True,
    ) -> None:
        self.sketch = RunSketch(name)
        self.write = write
        self.policy = StopPolicy(stop_on)
        self.sinks = Sinks(on_finding)
        self.status = status
        self.config = config or RuleConfig()
        self.codes = live_codes(config)
        self._rules = {rule.code: rule for rule in all_rules() if rule.code in self.codes}
        self.budget = budget
        self.background = background
        self._in_flight: _Judgement | None = None
        self.sentinel = Sentinel()
        self.first_seen: dict[str, int | None] = {}
        self._candidates: dict[str, int] = {}  # code -> step of the judgement that first made it
        self._at_once = {rule.code for rule in all_rules() if rule.live_at_once}
        self._wait = {rule.code: rule.live_after for rule in all_rules()}
        self._inputs = {rule.code: _inputs(rule.requires) for rule in all_rules() if rule.code in self.codes}
        self._applied: dict[str, tuple[int, ...]] = {}  # code -> versions of its inputs when last applied
        self._verdicts: dict[str, list[Finding]] = {}  # code -> its findings then, as the rule made them
        self.findings: list[Finding] = []
        self._stop: Finding | None = None
        self._urgent = False
        self._checkpoint = _FIRST_CHECKPOINT
        self._judged_step: int | None = None
        self._cost = 0.0
        self._last = time.monotonic()
        # (step, CPU seconds) of each judgement that applied rules, wherever it ran: what live findings
        # cost beyond the per-step sentinel (benchmarks/overhead.py prints it).
        self.judged: list[tuple[int, float]] = []

    # -- fed by the watch ----------------------------------------------------------------

    def observe(self, record: Record, line: str | None = None) -> None:
        """A record the watch has just written (``line``: as the file holds it)."""
        self.sketch.add(record, line)
        if record.get("event") in (schema.EV_NONFINITE, schema.EV_NONFINITE_OP):
            self._urgent = True

    def observe_layers(self, records: list[Record]) -> None:
        """The layer records of one step the watch has just written, at once."""
        self.sketch.add_layers(records)

    def step_finished(self, record: StepRecord) -> bool:
        """Called at each step boundary; True when the watch should flush (and so evaluate) now."""
        if self.sentinel.tripped(record):
            self._urgent = True
        if self._in_flight is not None and self._in_flight.done:
            self._take_verdict()
        return self._urgent or record.step >= self._checkpoint

    def flushed(self, *, final: bool = False) -> None:
        """The watch has written its pending records: evaluate the rules if it is time."""
        self.sketch.settle()
        if self.sketch.latest_step is None:
            return
        on_this_thread = final or self._urgent or not self.background
        # A checkpoint step is judged at that step whatever the judgement before it still does: wait for it.
        checkpoint = self.sketch.latest_step >= self._checkpoint
        if self._in_flight is not None and (on_this_thread or checkpoint or self._in_flight.done):
            self._in_flight.wait()
            self._take_verdict()
        if final or self._due():
            self._evaluate(on_this_thread)
        if self.status is not None:
            self.status.update(self.sketch.name, self.sketch.latest_step, self.sketch.latest_fields, len(self.findings))

    def take_stop(self) -> Finding | None:
        """The finding that should stop training, once."""
        stop, self._stop = self._stop, None
        return stop

    def close(self) -> None:
        if self._in_flight is not None:  # the watch is going: a verdict now would have nowhere to go
            self._in_flight.wait()
            self._in_flight = None
        if self.status is not None:
            self.status.remove(self.sketch.name)

    # -- evaluation -------------------------------------------------------------------------

    def _due(self) -> bool:
        step = self.sketch.latest_step
        if step == self._judged_step or self._in_flight is not None:
            return False
        if self._urgent or step >= self._checkpoint:
            return True
        return time.monotonic() - self._last >= self._cost / self.budget

    def _evaluate(self, on_this_thread: bool) -> None:
        started, cpu = time.monotonic(), time.thread_time()
        step = self.sketch.latest_step
        self._urgent = False
        self._judged_step = step
        while self._checkpoint <= step:
            self._checkpoint *= 2
        due = self._due_rules(step)
        rules = [self._rules[code] for code in due]
        if due and not on_this_thread:
            self._in_flight = _Judgement(self.sketch, due, rules, self.config)
            return
        run = self.sketch.run() if due else None
        if run is not None:
            self._conclude(step, due, dict(self.sketch.versions), apply_rules(run, self.config, rules))
            self.judged.append((step, time.thread_time() - cpu))
        self._last = time.monotonic()
        self._cost = self._last - started

    def _take_verdict(self) -> None:
        """The judgement that ran off the training thread: its verdicts, announced from here."""
        judgement, self._in_flight = self._in_flight, None
        if judgement.error is not None:
            raise judgement.error
        if judgement.analysis is not None:
            self._conclude(judgement.step, judgement.due, judgement.versions, judgement.analysis)
            self.judged.append((judgement.step, judgement.cpu))
        self._last = time.monotonic()
        self._cost = judgement.cost

    def _conclude(self, step: int, due: tuple[str, ...], versions: dict[str, int], applied: Analysis) -> None:
        """Keep the ``due`` rules' verdicts of a judgement at ``step`` (of the sketch at ``versions``) and
        announce what they newly make."""
        made = {
            f.code: f
            for f in self._judge(applied, due, versions).findings
            if f.code not in self.first_seen and f.severity in _ANNOUNCED and step >= self._wait[f.code]
        }
        for code, finding in made.items():
            if self._at_once_applies(finding) or 2 * self._candidates.get(code, step) <= step:
                self._announce(finding, step)
        self._candidates = {code: self._candidates.get(code, step) for code in made if code not in self.first_seen}

    def _due_rules(self, step: int) -> tuple[str, ...]:
        """The live rules worth applying now: not announced, past their ``live_after``, inputs moved."""
        return tuple(
            code
            for code in self.codes
            if code not in self.first_seen and step >= self._wait[code] and self._moved(code)
        )

    def _moved(self, code: str) -> bool:
        versions = self.sketch.versions
        return self._applied.get(code) != tuple(versions.get(name, 0) for name in self._inputs[code])

    def _judge(self, applied: Analysis, due: tuple[str, ...], versions: dict[str, int]) -> Analysis:
        """``applied`` (the ``due`` rules' findings) ordered with the verdicts kept of the other live rules."""
        for code in due:
            self._applied[code] = tuple(versions.get(name, 0) for name in self._inputs[code])
            self._verdicts[code] = [f for f in applied.findings if f.code == code]
        applied.findings = [f for code in self.codes for f in self._verdicts.get(code, ())]
        return arrange(applied)

    def _at_once_applies(self, finding: Finding) -> bool:
        # Only an error cannot un-happen: a gradient that overflowed once while the loss stayed finite may
        # be an AMP step the scaler skips, which the next judgement tells apart.
        return finding.code in self._at_once and finding.severity is Severity.ERROR

    def _announce(self, finding: Finding, step: int) -> None:
        self.first_seen[finding.code] = step
        self.findings.append(finding)
        self.write(
            {
                "kind": schema.EVENT,
                "step": step,
                "event": schema.EV_FINDING,
                "code": finding.code,
                "severity": finding.severity.value,
                "title": finding.title,
                "message": finding.message,
                "module": finding.module,
                "onset": finding.onset,
                "fix": finding.fixes[0] if finding.fixes else None,
            }
        )
        self.sinks.send(finding, announcement(finding, step))
        if self._stop is None and self.policy.matches(finding):
            self._stop = finding
