"""How a `Run` finds a column: in the step frame, else the evaluation frame; never the step itself."""

from __future__ import annotations

import numpy as np
import pandas as pd

from diagnose.run import Columns, Run


def make_run() -> Run:
    steps = pd.DataFrame({"step": [1.0, 2.0, 3.0], "loss": [3.0, 2.0, 1.0], "acc": [0.1, 0.2, 0.3]})
    evals = pd.DataFrame({"step": [2.0], "val_loss": [2.5], "acc": [0.9]})
    return Run(name="r", steps=steps, evals=evals)


def test_columns_are_found_in_the_frame_that_holds_them_inside_and_outside_a_reading_block() -> None:
    run = make_run()
    outside = [(c, run.has(c), run.series(c).to_dict()) for c in ("loss", "val_loss", "acc", "step", "none")]
    with run.reading():
        inside = [(c, run.has(c), run.series(c).to_dict()) for c in ("loss", "val_loss", "acc", "step", "none")]
    expected = [
        ("loss", True, {1.0: 3.0, 2.0: 2.0, 3.0: 1.0}),
        ("val_loss", True, {2.0: 2.5}),
        ("acc", True, {1.0: 0.1, 2.0: 0.2, 3.0: 0.3}),  # in both frames: the training one
        ("step", False, {}),
        ("none", False, {}),
    ]
    assert outside == expected and inside == expected


def test_a_column_added_outside_a_reading_block_is_found() -> None:
    run = make_run()
    assert not run.has("grad_norm")
    run.steps["grad_norm"] = np.ones(3)
    assert run.has("grad_norm")


def test_a_run_given_its_columns_reads_them_as_one_given_frames_does_and_builds_the_frame_only_when_asked() -> None:
    framed = make_run()
    read_only = {}
    for kind in ("steps", "evals"):
        arrays = {name: getattr(framed, kind)[name].to_numpy(copy=True) for name in getattr(framed, kind).columns}
        for values in arrays.values():
            values.flags.writeable = False  # as pyarrow's memory is
        read_only[kind] = Columns(arrays, len(getattr(framed, kind)))
    run = Run(name="r", steps=read_only["steps"], evals=read_only["evals"])
    with run.reading():
        found = [(c, run.has(c), run.series(c).to_dict()) for c in ("loss", "val_loss", "acc", "step", "none")]
        facts = (run.n_steps, run.last_step, run.objective, run.columns("evals"), run.dtype("steps", "loss"))
    assert found == [
        (c, framed.has(c), framed.series(c).to_dict()) for c in ("loss", "val_loss", "acc", "step", "none")
    ]
    assert facts == (3, 3, "supervised", ["step", "val_loss", "acc"], np.dtype("float64"))
    assert isinstance(run.__dict__["_steps"], Columns)  # nothing above needed the frame
    pd.testing.assert_frame_equal(run.steps, framed.steps)
    run.steps.loc[0, "loss"] = 9.0  # the frame owns copies of the read-only columns: the user may change it
    assert run.series("loss").iloc[0] == 9.0 and read_only["steps"].arrays["loss"][0] == 3.0
