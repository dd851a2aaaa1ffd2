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


class RunSketch:
    """Bounded memory of a run's records; `run()` reads them as the reader would read the file."""

    def __init__(self, name: str, *, head: int = 64, tail: int = 256, middle: int = 256) -> None:
        self.name = name
        self.meta: Record | None = None
        self.head: list[list[Record]] = []
        self.head_size = head
        self.tail: deque[list[Record]] = deque()
        self.tail_size = tail
        self.middle: list[list[Record]] = []
        self.middle_size = middle
        self._stride = 1
        self._thinned = 0
        self.evals = _Ends(256)
        self.events = _Ends(256)
        self.latest_step: int | None = None
        self.latest_fields: Record = {}

    def add(self, record: Record) -> None:
        kind = record.get("kind")
        if kind == schema.META:
            self.meta = self.meta or record
        elif kind == schema.EVAL:
            self.evals.add(record)
        elif kind == schema.EVENT:
            self.events.add(record)
        elif kind in (schema.STEP, schema.LAYER):
            self._add_step_record(record)

    def _add_step_record(self, record: Record) -> None:
        step = record.get("step")
        self.latest_step = step
        if record.get("kind") == schema.STEP:
            self.latest_fields = record
        last = self.tail[-1] if self.tail else (self.head[-1] if self.head else None)
        if last is not None and last[0].get("step") == step:
            last.append(record)
            return
        if len(self.head) < self.head_size:
            self.head.append([record])
            return
        self.tail.append([record])
        if len(self.tail) > self.tail_size:
            self._thin(self.tail.popleft())

    def _thin(self, group: list[Record]) -> None:
        """Keep every ``stride``-th step that leaves the tail; halve the middle when it is full."""
        self._thinned += 1
        if self._thinned % self._stride:
            return
        self.middle.append(group)
        if len(self.middle) > self.middle_size:
            self.middle = self.middle[1::2]
            self._stride *= 2

    def records(self) -> Iterable[Record]:
        if self.meta is not None:
            yield self.meta
        for groups in (self.head, self.middle, self.tail):
            for group in groups:
                yield from group
        yield from self.evals
        yield from self.events

    def run(self) -> Run | None:
        """The run as far as it has gone, or None before its first step."""
        if self.latest_step is None:
            return None
        raw = "\n".join(json.dumps(schema.encode(r), separators=(",", ":")) for r in self.records())
        return runs_from_bytes(raw.encode("utf-8"), Path(f"{self.name}.jsonl"), name=self.name)[-1]
