"""What happens when a live finding appears: the announcement, the user's sink, and the stop policy."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterable
from typing import Any

from diagnose.errors import ConfigError
from diagnose.rules.base import Finding, Severity

logger = logging.getLogger("diagnose")


class DiagnoseWarning(UserWarning):
    """Category of the warning issued for each live finding.

    Ignored by default, because the ``diagnose`` logger already prints the
    same line; ``warnings.simplefilter("always", diagnose.DiagnoseWarning)``
    shows them (an ``"error"`` filter does not stop training: ``stop_on`` does).
    """


warnings.filterwarnings("ignore", category=DiagnoseWarning, append=True)


class TrainingStopped(Exception):
    """Raised at the next step boundary in the training loop when a finding matches ``stop_on``.

    The run file has been flushed and closed when it is raised; ``finding``
    is the live finding that stopped training.
    """

    def __init__(self, finding: Finding) -> None:
        self.finding = finding
        super().__init__(f"diagnose stopped training: {announcement(finding)}")


def announcement(finding: Finding, step: int | None = None) -> str:
    """The one line that announces a live finding: code, step, module, what, first fix."""
    where = f" at step {step}" if step is not None else ""
    module = f" in {finding.module_label or finding.module}" if finding.module else ""
    fix = f" -- first fix: {finding.fixes[0]}" if finding.fixes else ""
    text = f"{finding.code} {finding.severity.value}{where}{module}: {finding.message}{fix}"
    return " ".join(text.split())  # one line, whatever the message held


class StopPolicy:
    """Which findings end training: ``"error"`` (or another severity: that one and worse),
    a rule code or code prefix, or a list of them; None: never."""

    def __init__(self, stop_on: str | Iterable[str] | None) -> None:
        self.severity: Severity | None = None
        self.codes: tuple[str, ...] = ()
        if stop_on is None:
            return
        items = [stop_on] if isinstance(stop_on, str) else list(stop_on)
        for item in items:
            item = str(item).strip()
            if item.lower() in {s.value for s in Severity}:
                self.severity = Severity.parse(item)
            elif item:
                self.codes += (item.upper(),)
        if not self.severity and not self.codes:
            raise ConfigError(f"stop_on={stop_on!r}: give a severity (error, warning, info) or rule codes")

    def matches(self, finding: Finding) -> bool:
        if self.severity is not None and finding.severity.rank >= self.severity.rank:
            return True
        return any(finding.code.startswith(code) for code in self.codes)


class Sinks:
    """The user's ``on_finding`` callable, guarded: a failing sink is reported once and never stops training."""

    def __init__(self, on_finding: Callable[[Finding], Any] | None) -> None:
        self.on_finding = on_finding
        self._failed = False

    def send(self, finding: Finding, line: str) -> None:
        level = logging.WARNING if finding.severity.rank >= Severity.WARNING.rank else logging.INFO
        logger.log(level, "diagnose: %s", line)
        try:  # noqa: SIM105 - the comment on the except says why it is empty
            warnings.warn(line, DiagnoseWarning, stacklevel=2)
        except DiagnoseWarning:  # an "error" filter: stopping is stop_on's job, not the warning's
            pass
        if self.on_finding is None or self._failed:
            return
        try:
            self.on_finding(finding)
        except Exception as exc:  # noqa: BLE001 - a broken sink must not end the run
            self._failed = True
            logger.warning("diagnose: on_finding failed and is switched off (%s: %s)", type(exc).__name__, exc)
