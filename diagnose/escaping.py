"""Text from a run (run names, module names, metric keys, messages quoting them) made safe for
where it is printed. Every output path uses this one module.

- `visible`: control characters (C0, DEL, C1, and the Unicode bidirectional overrides that reorder
  what a reader sees) become visible escapes such as ``\\x1b``, so an ANSI or OSC sequence in a run
  name cannot clear the screen or set the window title, and a newline cannot start a line.
- `plain_in_figure`: matplotlib reads text between two ``$`` as TeX math (an unbalanced brace in a
  run name would stop the figure from drawing at all); every ``$`` not already escaped gets its
  backslash, and control characters become escapes as in `visible`.
- `neutralise_workflow_command`: under GitHub Actions a printed line that starts with ``::`` is a
  workflow command (``::error::``, ``::add-mask::``); such a line gets a visible ``\\`` in front.
  `WorkflowSafeStream` does this to every line written through it, so that only the annotation
  writer (`diagnose.report.ci_annotations`, which escapes its own data) issues commands.
"""

from __future__ import annotations

import os
import re
from typing import TextIO

# C0 controls, DEL, C1 controls; bidirectional embeddings, overrides and isolates (CVE-2021-42574).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_SGR = re.compile(r"\x1b\[[0-9;]*m")  # the colour codes our own console writes around text


def _shown(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def visible(text: object) -> str:
    """``text`` with every control character written out as an escape."""
    return _CONTROL.sub(_shown, str(text))


_BARE_DOLLAR = re.compile(r"(?<!\\)\$")


def plain_in_figure(text: object) -> str:
    """``text`` as matplotlib draws it literally: no math, no control characters. Idempotent."""
    return _BARE_DOLLAR.sub(r"\\$", visible(text))


def in_github_actions() -> bool:
    return bool(os.environ.get("GITHUB_ACTIONS"))


def neutralise_workflow_command(line: str) -> str:
    """A line the Actions runner would read as a workflow command, made plain text."""
    plain = _SGR.sub("", line)
    if not plain.lstrip().startswith("::"):
        return line
    return "\\" + line


class WorkflowSafeStream:
    """A text stream that passes whole lines on to ``target``, each through `neutralise_workflow_command`."""

    def __init__(self, target: TextIO) -> None:
        self.target = target
        self._partial = ""

    def write(self, text: str) -> int:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self.target.write(neutralise_workflow_command(line) + "\n")
        return len(text)

    def flush(self) -> None:
        self.target.flush()

    def close(self) -> None:
        """Write the last line even when it has no newline."""
        if self._partial:
            self.target.write(neutralise_workflow_command(self._partial))
            self._partial = ""
        self.target.flush()

    def isatty(self) -> bool:
        return self.target.isatty()

    @property
    def encoding(self) -> str:
        return getattr(self.target, "encoding", "utf-8")
