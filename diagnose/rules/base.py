"""What a rule is and what it returns.

A rule is one class, declared in one place and listed once in the code table
(``diagnose.rules.codes``)::

    class LossDiverges(Rule):
        '''
        ## What it detects
        ...
        ## Why it matters
        ...
        ## How it decides
        ...
        ## What to do
        ...
        '''

        code = "LR001"
        name = "loss-diverges"
        title = "Loss rises from the start"
        category = Category.OPTIMIZATION
        severity = Severity.ERROR
        requires = ("loss",)
        thresholds = (
            Threshold("rise_ratio", 1.5, "last/first loss ratio that counts as rising",
                      source="..."),
        )

        def check(self, run, t):
            if ...:
                yield self.finding(run, message=..., onset=..., evidence={...},
                                   causes=[...], fixes=[...])

The docstring is the documentation that ``diagnose rules``, ``diagnose
explain CODE`` and the reports print; it is written nowhere else.
"""

from __future__ import annotations

import enum
import inspect
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from diagnose.levels import Severity
from diagnose.run import Run


class Category(str, enum.Enum):
    NUMERICS = "numerics"  # NaN, Inf, overflow
    OPTIMIZATION = "optimization"  # learning rate, divergence, stalls, spikes
    GENERALIZATION = "generalization"  # overfitting, train/val gaps
    GRADIENTS = "gradients"  # exploding, vanishing, update ratios
    ACTIVATIONS = "activations"  # dead units, saturation, collapse
    INITIALIZATION = "initialization"  # initial loss, chance level
    RESOURCES = "resources"  # memory, skipped AMP steps, throughput
    DISTRIBUTED = "distributed"  # cross-rank problems
    PREFLIGHT = "preflight"  # checks run before training
    BUGS = "bugs"  # a mistake in the training script (missing zero_grad, softmax into cross-entropy, ...)


@dataclass(frozen=True)
class Threshold:
    """A named, documented number a rule decides with. ``source`` says where it comes from."""

    name: str
    default: float
    description: str
    source: str = ""


DOC_SECTIONS = ("What it detects", "Why it matters", "How it decides", "What to do")


@dataclass(frozen=True)
class Finding:
    """One diagnosed problem: plain data that every report format renders."""

    code: str
    name: str
    title: str
    severity: Severity
    category: Category
    message: str
    run: str = ""
    onset: int | None = None
    end: int | None = None
    steps: tuple[int, ...] = ()
    module: str | None = None
    # The module as a person finds it in their code ("model.2 (Linear)"); `module` is the recorded name.
    module_label: str = ""
    rank: int | None = None
    evidence: Mapping[str, Any] = field(default_factory=dict)
    confidence: float = 1.0
    causes: tuple[str, ...] = ()
    fixes: tuple[str, ...] = ()
    priority: int = 50
    # The differential diagnosis (diagnose.rules.diagnosis): the code of the root-cause
    # finding this one is a symptom of, or the codes of the symptoms this root cause explains.
    explained_by: str | None = None
    symptoms: tuple[str, ...] = ()
    # The step at which the live monitor first announced this finding while the run was recorded.
    seen_live: int | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["severity"] = self.severity.value
        data["category"] = self.category.value
        data["steps"] = list(self.steps)
        data["causes"] = list(self.causes)
        data["fixes"] = list(self.fixes)
        data["symptoms"] = list(self.symptoms)
        data["evidence"] = dict(self.evidence)
        return data

    def sort_key(self) -> tuple[float, ...]:
        """Worst first: severity, then confidence, then the rule's priority."""
        return (-self.severity.rank, -self.confidence, self.priority, self.onset if self.onset is not None else 0)


class Rule:
    """Base class of every rule; subclasses declare the class attributes and ``check``."""

    code: ClassVar[str]
    name: ClassVar[str]
    title: ClassVar[str]
    category: ClassVar[Category]
    severity: ClassVar[Severity]
    requires: ClassVar[tuple[str, ...]] = ()
    thresholds: ClassVar[tuple[Threshold, ...]] = ()
    # Lower runs first in the report among findings of equal severity: the
    # primary problem (NaN, divergence) before its consequences (spikes, stalls).
    priority: ClassVar[int] = 50
    # Relations between findings, which the engine applies to the findings the
    # rules actually produced on a run (with the user's thresholds); a rule never
    # calls another rule to decide whether to fire.
    # Codes of findings this rule's finding is a cause of (dead units explain a
    # loss stuck at chance): when both fire, this one is reported first.
    explains: ClassVar[tuple[str, ...]] = ()
    # A rule that reads "the training loss should fall" (divergence, stalls, chance
    # level, overfitting, spikes): not applied to adversarial or RL losses.
    assumes_falling_loss: ClassVar[bool] = False
    # Codes of findings this rule's finding makes redundant (a plateau at chance
    # level is also a stall): when both fire, those are set aside.
    supersedes: ClassVar[tuple[str, ...]] = ()
    # True when ``check`` can judge a run in progress (its finding on a partial run means the same as on a
    # finished one): the live monitor then runs it while the run is recorded (see diagnose.live).
    live: ClassVar[bool] = False
    # Live findings are announced when a second judgement, later in the run, still makes them; True when
    # one is enough because the evidence cannot go away (a NaN that has happened).
    live_at_once: ClassVar[bool] = False
    # Steps a live rule waits before a finding counts: a loss at chance level or a memory curve still
    # rising at step 16 is a warm-up, not yet a plateau or a leak.
    live_after: ClassVar[int] = 0

    def check(self, run: Run, t: Mapping[str, float]) -> Iterable[Finding]:
        raise NotImplementedError

    # -- helpers for subclasses --------------------------------------------------

    def finding(
        self,
        run: Run,
        *,
        message: str,
        onset: float | None = None,
        end: float | None = None,
        steps: Iterable[float] = (),
        module: str | None = None,
        evidence: Mapping[str, Any] | None = None,
        confidence: float = 1.0,
        causes: Iterable[str] = (),
        fixes: Iterable[str] = (),
        severity: Severity | None = None,
    ) -> Finding:
        return Finding(
            code=self.code,
            name=self.name,
            title=self.title,
            severity=severity or self.severity,
            category=self.category,
            message=message,
            run=run.name,
            onset=_as_step(onset),
            end=_as_step(end),
            steps=tuple(int(s) for s in steps),
            module=module,
            module_label=run.module_label(module),
            rank=run.rank,
            evidence=_plain(evidence or {}),
            confidence=round(float(min(max(confidence, 0.0), 1.0)), 3),
            causes=tuple(causes),
            fixes=tuple(fixes),
            priority=self.priority,
        )

    def missing(self, run: Run) -> list[str]:
        """Required fields the run lacks (the rule is then not evaluated)."""
        return [f for f in self.requires if not _run_has(run, f)]

    @classmethod
    def doc(cls) -> dict[str, str]:
        """The documentation sections parsed from the class docstring."""
        return parse_doc(inspect.getdoc(cls) or "")

    @classmethod
    def threshold_defaults(cls) -> dict[str, float]:
        return {t.name: t.default for t in cls.thresholds}


# A requirement of the cross-rank rules: a run recorded by several processes.
RANKS = "ranks"


def _run_has(run: Run, field_name: str) -> bool:
    """``layers.X`` asks for a per-layer column, ``events`` for any event, ``ranks`` for a run of several
    processes (a rank's file may be missing), else a step/eval column."""
    if field_name == RANKS:
        return len(run.ranks) >= 2 or bool(run.meta.get("missing_ranks"))
    if field_name.startswith("layers."):
        column = field_name.split(".", 1)[1]
        return column in run.layers.columns and bool(run.layers[column].notna().any())
    if field_name == "events":
        return not run.events.empty
    return run.has(field_name)


def _as_step(value: float | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _plain(value: Any) -> Any:
    """Evidence as JSON-friendly Python values (numpy scalars become floats, rounded)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float):
        return float(f"{value:.6g}")
    return value


_SECTION = re.compile(r"^##\s+(.+?)\s*$", re.MULTILINE)


_RST_LITERAL = re.compile(r"``(.+?)``")


def parse_doc(text: str) -> dict[str, str]:
    """Docstring sections by heading, inline code in Markdown's single backticks (docstrings use RST's double)."""
    parts = _SECTION.split(_RST_LITERAL.sub(r"`\1`", text))
    sections = {}
    for heading, body in zip(parts[1::2], parts[2::2], strict=False):
        sections[heading.strip()] = body.strip()
    return sections
