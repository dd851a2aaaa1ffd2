"""Which way a fix turns a training knob, so that a report never turns one both ways.

A fix is free text written by a rule ("lower the learning rate 3-10x"). The
knobs a user can turn are few, and the ways rules phrase turning them are
few too: each knob below lists the phrasings that raise it and the ones that
lower it. Two fixes contradict when they turn the same knob opposite ways;
the engine keeps the one that comes from the root cause.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_UP, _DOWN = 1, -1

# knob -> (phrasings that raise it, phrasings that lower it), matched case-insensitively.
KNOBS: dict[str, tuple[str, str]] = {
    "learning_rate": (
        r"\b(raise|increase|higher|larger)\b[^.;:]{0,20}\b(learning rate|lr)\b|\b(learning rate|lr)\b up\b"
        r"|\b(learning rate|lr)\b [\d.x-]*\s*(higher|larger)\b",
        r"\b(lower|reduce|decrease|smaller|halve|decay)\b[^.;:]{0,20}\b(learning rate|lr)\b"
        r"|\b(learning rate|lr)\b [\d.x-]*\s*(lower|smaller)\b",
    ),
    "batch_size": (
        r"\b(raise|increase|larger|bigger)\b[^.;:]{0,12}\bbatch\b|\baccumulate gradients\b",
        r"\b(lower|reduce|decrease|smaller|halve)\b[^.;:]{0,12}\bbatch\b",
    ),
    "regularisation": (
        r"\badd (dropout|weight decay|regularis|regulariz)|\bregularis[e]?:|\bmore (dropout|regularis|regulariz)"
        r"|\b(raise|increase)\b[^.;:]{0,12}\b(dropout|weight decay)\b",
        r"\b(remove|less|lower|reduce)\b[^.;:]{0,12}\b(dropout|weight decay|regularis|regulariz)",
    ),
    "model_size": (
        r"\b(larger|bigger|wider|deeper) model\b|\bmore capacity\b",
        r"\b(smaller|narrower|shallower) model\b|\bless capacity\b",
    ),
    "training_length": (
        r"\btrain longer\b|\bmore (epochs|steps)\b",
        r"\bfewer (epochs|steps)\b|\bearly stopping\b|\bstop earlier\b",
    ),
}
_COMPILED = {
    knob: (re.compile(up, re.IGNORECASE), re.compile(down, re.IGNORECASE)) for knob, (up, down) in KNOBS.items()
}


def directions(fix: str) -> dict[str, int]:
    """The knobs ``fix`` turns: knob -> +1 (raise) or -1 (lower). A fix that says both
    ("raise the batch size or lower the learning rate") turns each knob its own way."""
    turned = {}
    for knob, (up, down) in _COMPILED.items():
        raises, lowers = bool(up.search(fix)), bool(down.search(fix))
        if raises != lowers:
            turned[knob] = _UP if raises else _DOWN
    return turned


def contradictions(fixes: Iterable[str]) -> list[tuple[str, str, str]]:
    """(knob, fix that raises it, fix that lowers it) for every pair that disagrees."""
    seen: dict[str, dict[int, str]] = {}
    found = []
    for fix in fixes:
        for knob, way in directions(fix).items():
            other = seen.setdefault(knob, {}).get(-way)
            if other is not None:
                found.append((knob, fix, other) if way == _UP else (knob, other, fix))
            seen[knob].setdefault(way, fix)
    return found


def agrees_with(fix: str, settled: dict[str, int]) -> bool:
    """False when ``fix`` turns a knob against the way ``settled`` already turns it."""
    return all(settled.get(knob, way) == way for knob, way in directions(fix).items())
