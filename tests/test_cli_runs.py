"""The sample runs the CLI tests share (see cli_samples.py) fit the test rule's purpose."""

from __future__ import annotations

import math

from diagnose.cli.common import load_runs


def test_the_chosen_samples_fit_the_test_rule(runs):
    healthy, broken = (load_runs([runs[key]])[0].series("loss", keep_nan=True) for key in ("healthy", "broken"))
    assert healthy.iloc[-1] < healthy.iloc[0]
    assert math.isnan(broken.iloc[-1])
