"""A bounded picture of a run in progress, from which the rules can read a `Run` at any time.

The live checks must never re-read the run file and must hold a fixed amount
of memory however long the run goes. The sketch keeps, from the records as
they are written: the meta record, every record of the first
``head`` steps and of the latest ``tail`` steps, an evenly thinned sample
of the steps in between (at most ``middle``: when it fills up, every other
one is dropped and the spacing doubles), and the first and latest
evaluations and events. Early steps set the levels the rules compare
against (start of the loss, initial gradient norm); the latest steps are
where a new problem shows; the thinned middle keeps the shape of the curve.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from diagnose.readers.native import runs_from_bytes
from diagnose.run import Run
from diagnose.runfile import schema

Record = dict[str, Any]
_KEPT = (schema.META, schema.EVAL, schema.EVENT, schema.STEP, schema.LAYER)


class _Ends:
    """The first ``size`` and the latest ``size`` items of a stream."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.first: list[Any] = []
        self.latest: deque[Any] = deque(maxlen=size)

    def add(self, item: Any) -> None:
        if len(self.first) < self.size:
            self.first.append(item)
        else:
            self.latest.append(item)

    def __iter__(self) -> Any:
        yield from self.first
        yield from self.latest


class _Step:
    """The lines of one step's records, as the run file holds them."""

    __slots__ = ("lines", "step")

    def __init__(self, step: Any) -> None:
        self.step = step
        self.lines: list[str] = []


class RunSketch:
    """Bounded memory of a run's records; `run()` reads them as the reader would read the file.

    Records are kept as their lines (the watch hands over the line it wrote), so a judgement parses
    what the sketch holds without encoding any record twice. ``versions`` counts, per input a rule
    can require (a step or evaluation field, ``layers.<field>``, ``events``), the records that
    brought it: the live monitor judges again only the rules whose inputs moved.
    """

    def __init__(self, name: str, *, head: int = 64, tail: int = 256, middle: int = 256) -> None:
        self.name = name
        self.meta: str | None = None
        self.head: list[_Step] = []
        self.head_size = head
        self.tail: deque[_Step] = deque()
        self.tail_size = tail
        self.middle: list[_Step] = []
        self.middle_size = middle
        self._stride = 1
        self._thinned = 0
        self.evals = _Ends(256)
        self.events = _Ends(256)
        self.latest_step: int | None = None
        self.latest_fields: Record = {}
        self.versions: dict[str, int] = {}
        self._records = 0

    def add(self, record: Record, line: str | None = None) -> None:
        """Keep ``record``; ``line`` is its line in the run file, when the caller has it already."""
        kind = record.get("kind")
        if kind not in _KEPT:
            return
        if line is None:
            line = json.dumps(schema.encode(record), separators=(",", ":"))
        self._records += 1
        if kind == schema.META:
            self.meta = self.meta or line
        elif kind == schema.EVENT:
            self.events.add(line)
            self.versions["events"] = self._records
        else:
            self._count_inputs(record, "layers." if kind == schema.LAYER else "")
            if kind == schema.EVAL:
                self.evals.add(line)
            else:
                self._add_step_record(record, line)

    def _count_inputs(self, record: Record, prefix: str) -> None:
        versions, count = self.versions, self._records
        for key in record:
            versions[prefix + key] = count

    def _add_step_record(self, record: Record, line: str) -> None:
        step = record.get("step")
        self.latest_step = step
        if record.get("kind") == schema.STEP:
            self.latest_fields = record
        last = self.tail[-1] if self.tail else (self.head[-1] if self.head else None)
        if last is None or last.step != step:
            last = _Step(step)
            if len(self.head) < self.head_size:
                self.head.append(last)
            else:
                self.tail.append(last)
                if len(self.tail) > self.tail_size:
                    self._thin(self.tail.popleft())
        last.lines.append(line)

    def _thin(self, group: _Step) -> None:
        """Keep every ``stride``-th step that leaves the tail; halve the middle when it is full."""
        self._thinned += 1
        if self._thinned % self._stride:
            return
        self.middle.append(group)
        if len(self.middle) > self.middle_size:
            self.middle = self.middle[1::2]
            self._stride *= 2

    def lines(self) -> Iterable[str]:
        if self.meta is not None:
            yield self.meta
        for groups in (self.head, self.middle, self.tail):
            for group in groups:
                yield from group.lines
        yield from self.evals
        yield from self.events

    def snapshot(self) -> list[str]:
        """The lines held now: what `read_lines` reads, on any thread, while the sketch goes on."""
        return list(self.lines())

    def run(self) -> Run | None:
        """The run as far as it has gone, or None before its first step."""
        if self.latest_step is None:
            return None
        return read_lines(self.name, self.lines())


def read_lines(name: str, lines: Iterable[str]) -> Run | None:
    """The run that ``lines`` (of a sketch) hold, read as the reader reads a file."""
    raw = "\n".join(lines).encode("utf-8")
    runs = runs_from_bytes(raw, Path(f"{name}.jsonl"), name=name)
    return runs[-1] if runs else None
