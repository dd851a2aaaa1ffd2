"""`Run`: one training run, whatever wrote it, as the rules and reports see it."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from diagnose import ordering

# What kind of objective the training loss is. Adversarial (GAN) and
# reinforcement-learning losses are not meant to fall, so the rules that read
# "the loss must fall" do not judge them. Recognised from the metadata task,
# from paired generator and discriminator losses, or from policy-loss names.
ADVERSARIAL_TASKS = {"gan", "adversarial", "wgan"}
RL_TASKS = {"rl", "reinforcement", "reinforcement_learning", "ppo", "grpo", "dqn", "rlhf", "policy_gradient"}
_GENERATOR = re.compile(r"(^|_)(g|gen|generator|netg)(_|$)")
_DISCRIMINATOR = re.compile(r"(^|_)(d|disc|discriminator|netd|critic)(_|$)")
_POLICY = re.compile(
    r"(^|_)(policy|pg|actor|value|vf|entropy)(_gradient)?_loss$|^(approx_kl|clip_?frac(tion)?|"
    r"episode_reward|ep_rew_mean|mean_reward|reward|rewards|reward_mean|episode_return)$"
)


def _empty_frame(*columns: str) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="float64") for c in columns})


# Up to this many columns a frame keeps each column its own array, built without a copy: stacking a
# long run's columns into one block was a third of reading it. A wider frame (hundreds of scalars) is
# stacked as before: pandas is slow on, and warns of, a frame of more than 100 separate blocks.
SEPARATE_COLUMNS = 32


class Columns:
    """A table as a reader hands it to a `Run`: equal-length numpy arrays by name, in order.

    The rules read a run's step and evaluation columns as arrays (`Run.column`), so the frame
    ``run.steps`` is built of them only when something asks for it. The arrays may be read-only
    views (of pyarrow's memory, of the reader's own frames); the frame copies those, so that it is
    the user's to change in place, and only then pays for the copy (a million-step run: 8 MB a column).
    """

    def __init__(self, arrays: dict[str, np.ndarray], length: int) -> None:
        self.arrays = arrays
        self.length = length

    @classmethod
    def of(cls, frame: pd.DataFrame) -> Columns:
        """The columns of ``frame`` (read-only views of its numpy arrays under copy-on-write)."""
        return cls({name: frame[name].to_numpy() for name in frame.columns}, len(frame))

    @property
    def columns(self) -> list[str]:
        return list(self.arrays)

    def __len__(self) -> int:
        return self.length

    def frame(self, *, own: bool = False) -> pd.DataFrame:
        """The columns as a frame; with ``own``, a column that is a read-only view is copied, so that
        the frame can be changed in place."""
        if len(self.arrays) > SEPARATE_COLUMNS:
            return pd.DataFrame(self.arrays, index=pd.RangeIndex(self.length))
        arrays = self.arrays
        if own:
            arrays = {name: values if values.flags.writeable else values.copy() for name, values in arrays.items()}
        return pd.DataFrame(arrays, index=pd.RangeIndex(self.length), copy=False)


class _Table:
    """A `Run` field (``steps``, ``evals``) given as a frame or as the `Columns` of one: read as a
    frame, built from the columns on first use and kept from then on (the run's table thereafter)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = f"_{name}"

    def __get__(self, run: Run | None, owner: type | None = None) -> Any:
        if run is None:  # the field's default, which dataclasses asks the class for: no rows
            return Columns({"step": np.zeros(0)}, 0)
        table = run.__dict__[self.slot]
        if isinstance(table, Columns):
            table = run.__dict__[self.slot] = table.frame(own=True)
        return table

    def __set__(self, run: Run, table: pd.DataFrame | Columns) -> None:
        run.__dict__[self.slot] = table


@contextmanager
def reading(runs: Iterable[Run]) -> Iterator[None]:
    """`Run.reading` for each of ``runs`` at once (a report reads every run several times)."""
    with ExitStack() as stack:
        for run in runs:
            stack.enter_context(run.reading())
        yield


@dataclass
class Run:
    """A training run read from a file.

    ``steps``: one row per optimizer step, column ``step`` plus canonical
    fields (``loss``, ``lr``, ``grad_norm``, ...; see
    :mod:`diagnose.runfile.schema`) and any user scalar. ``evals``: one row
    per evaluation, ``step`` plus ``val_*`` columns. ``layers``: one row per
    module per sampled step. ``events``: non-finite values, skipped steps,
    probe failures. All frames are sorted by step; missing values are NaN.

    A NaN in a frame may mean "not logged" or "logged as NaN". The steps at
    which the source really held a NaN are kept in ``nan_steps`` (column ->
    sorted step array), so rules can tell a broken run from a sparse log.
    """

    name: str
    source: str = ""
    format: str = "diagnose"
    meta: dict[str, Any] = field(default_factory=dict)
    steps: pd.DataFrame = _Table()  # given as a frame or its `Columns`
    evals: pd.DataFrame = _Table()
    layers: pd.DataFrame = field(default_factory=lambda: _empty_frame("step", "module"))
    events: pd.DataFrame = field(default_factory=lambda: _empty_frame("step", "event"))
    nan_steps: dict[str, np.ndarray] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    # For a per-rank run (torch.distributed): the rank, or None.
    rank: int | None = None
    # For a multi-process run read from per-rank files: every rank's own run.
    # The frames above are then rank 0's, so single-rank rules work unchanged.
    ranks: dict[int, Run] = field(default_factory=dict)
    _layer_tables: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)
    _read_only: dict[tuple, Any] | None = field(default=None, init=False, repr=False, compare=False)
    _settled: dict[tuple, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    @contextmanager
    def reading(self) -> Iterator[Run]:
        """Within this block the run is only read (the rules, a report): `has` and `series` keep what
        they found and give it again, so twenty rules asking for the loss of a long run pay for one
        pass over it. The series given out are then shared: they are read, never changed in place."""
        outer = self._read_only
        self._read_only = dict(self._settled) if outer is None else outer
        try:
            yield self
        finally:
            self._read_only = outer

    def kept(self, key: tuple, compute: Any) -> Any:
        """``compute()``, once per ``key`` within `reading` (each call outside it, unless `settle` kept it)."""
        if self._read_only is None:
            return self._settled[key] if key in self._settled else compute()
        if key not in self._read_only:
            self._read_only[key] = compute()
        return self._read_only[key]

    def settle(self, keys: Iterable[tuple]) -> None:
        """Keep what `kept` found for ``keys`` (within `reading`) beyond it, for a run that will not
        change any more: a worker process that analysed a run of a folder sends these few facts back
        with it, so that the report does not compute them again, one run after another."""
        if self._read_only is None:
            raise RuntimeError("settle() needs an open reading() block")
        self._settled.update({key: self._read_only[key] for key in keys if key in self._read_only})

    # -- what the user told us about the task -------------------------------

    @property
    def metadata(self) -> dict[str, Any]:
        """User-given metadata (task, num_classes, loss_fn, ...)."""
        return self.meta.get("metadata") or {}

    @property
    def num_classes(self) -> int | None:
        value = self.metadata.get("num_classes")
        return int(value) if isinstance(value, (int, float)) and value >= 2 else None

    @property
    def task(self) -> str | None:
        value = self.metadata.get("task")
        return str(value) if value else None

    @property
    def objective(self) -> str:
        """``"adversarial"``, ``"reinforcement"`` or ``"supervised"`` (the default: a loss meant to fall)."""
        return self.kept(("objective",), self._objective)

    def _objective(self) -> str:
        task = (self.task or "").strip().lower().replace("-", "_").replace(" ", "_")
        names = [c for c in self.columns("steps") if c != "step" and self.has(c)]
        losses = [c for c in names if "loss" in c]
        if task in ADVERSARIAL_TASKS or (
            any(_GENERATOR.search(c) for c in losses) and any(_DISCRIMINATOR.search(c) for c in losses)
        ):
            return "adversarial"
        if task in RL_TASKS or any(_POLICY.search(c) for c in names):
            return "reinforcement"
        return "supervised"

    # -- series access -------------------------------------------------------

    def has(self, column: str) -> bool:
        """True when the run holds at least one value (finite or not) of ``column``."""
        return self.kept(("has", column), lambda: self._has(column))

    def _has(self, column: str) -> bool:
        kind = self._kind_of(column)
        if kind is None:
            return False
        if len(self.nan_steps.get(column, ())) > 0:
            return True
        if self.dtype(kind, column) == "float64":  # the common case, without pandas' general missing-value test
            return not np.isnan(self._numbers(kind, column)).all()
        return bool(getattr(self, kind)[column].notna().any())

    def series(self, column: str, *, keep_nan: bool = False) -> pd.Series:
        """Values of a step or eval column indexed by step, unlogged points dropped.

        Infinite values are kept. Real NaNs (logged as NaN) are kept only
        with ``keep_nan=True``.
        """
        return self.kept(("series", column, keep_nan), lambda: self._series(column, keep_nan))

    def _series(self, column: str, keep_nan: bool) -> pd.Series:
        kind = self._kind_of(column)
        if kind is None:
            return pd.Series(dtype="float64", name=column)
        numbers, steps = self._numbers(kind, column), self._steps_of(kind)
        present = ~np.isnan(numbers)
        if keep_nan and column in self.nan_steps:
            present |= np.isin(steps, self.nan_steps[column])
        if present.all():  # every column of a frame logged at every step: they share one index
            index = self.kept(("step index", kind), lambda: pd.Index(steps, name="step"))
            # Within `reading` the series is only read, so it may share the frame's numbers (a
            # million-step column copied for each series read is a good part of a long run's rules).
            return pd.Series(numbers, index=index, name=column, copy=self._read_only is None)
        return pd.Series(numbers[present], index=pd.Index(steps[present], name="step"), name=column, copy=False)

    def _kind_of(self, column: str) -> str | None:
        """``"steps"`` or ``"evals"``: the frame that holds ``column``."""
        return self.kept(("kinds",), self._kinds).get(column)

    def _kinds(self) -> dict[str, str]:
        """Each column of ``steps`` and ``evals`` but the step: the frame that holds it (``steps``
        for a name in both). Rules ask for some thirty names, most of which a run does not log."""
        kinds = {}
        for kind in ("evals", "steps"):
            kinds.update(dict.fromkeys(self.columns(kind), kind))
        kinds.pop("step", None)
        return kinds

    def _numbers(self, kind: str, column: str) -> np.ndarray:
        """A column of ``steps`` or ``evals`` as float64, taken out of its frame once within `reading`."""
        return self.kept(("numbers", kind, column), lambda: self.column(kind, column, dtype="float64"))

    def _steps_of(self, kind: str) -> np.ndarray:
        return self.kept(("steps of", kind), lambda: self.column(kind, "step"))

    def columns(self, kind: str) -> list[str]:
        """The column names of ``steps`` or ``evals`` (``kind``), without building the frame."""
        return list(self._table(kind).columns)

    def column(self, kind: str, name: str, *, dtype: str | None = None) -> np.ndarray:
        """A column of ``steps`` or ``evals`` (``kind``) as an array, without building the frame; it
        may be the table's own memory, so it is read, never changed in place."""
        table = self._table(kind)
        if isinstance(table, Columns):
            return np.asarray(table.arrays[name], dtype=dtype)
        return table[name].to_numpy(dtype=dtype)

    def dtype(self, kind: str, name: str) -> Any:
        """The dtype of a column of ``steps`` or ``evals`` (``kind``), without building the frame."""
        table = self._table(kind)
        return table.arrays[name].dtype if isinstance(table, Columns) else table[name].dtype

    def _table(self, kind: str) -> pd.DataFrame | Columns:
        """``steps`` or ``evals`` as held: a frame, or the `Columns` it is not yet built of."""
        return self.__dict__[f"_{kind}"]

    def rank_frame(self, kind: str) -> pd.DataFrame:
        """``steps``, ``evals``, ``layers`` or ``events`` of every rank in one frame with a ``rank`` column."""
        parts = [getattr(run, kind).assign(rank=rank) for rank, run in sorted(self.ranks.items())]
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()

    @property
    def n_steps(self) -> int:
        if not len(self._table("steps")):
            return 0
        steps = self.column("steps", "step", dtype="float64")
        if len(steps) > 1 and ordering.never_falls(steps):
            return ordering.distinct(steps)  # sorted (as readers leave it): one pass
        return int(self.steps["step"].nunique())

    @property
    def last_step(self) -> int | None:
        candidates = [np.nanmax(self.column(kind, "step")) for kind in ("steps", "evals") if len(self._table(kind))]
        return int(max(candidates)) if candidates else None

    def layer_series(self, column: str) -> pd.DataFrame:
        """Per-layer values as a step x module table (NaN where not sampled), modules in model order."""
        if column not in self.layers.columns or self.layers.empty:
            return pd.DataFrame()
        if column not in self._layer_tables:
            self._layer_tables[column] = self._pivot_layers(column)
        return self._layer_tables[column]

    def _pivot_layers(self, column: str) -> pd.DataFrame:
        # Rules ask for several columns of the same (long) table: factorise steps and module names and
        # put the modules in model order once, then each column is one scatter and one frame.
        if "codes" not in self._layer_tables:
            self._layer_tables["codes"] = self._layer_codes()
        steps, step_values, modules, names, in_model_order = self._layer_tables["codes"]
        values = self.layers[column].to_numpy(dtype="float64")
        present = ~np.isnan(values) & (steps >= 0) & (modules >= 0)
        if not present.any():
            return pd.DataFrame()
        grid = np.full((len(step_values), len(names)), np.nan)
        grid[steps[present], modules[present]] = values[present]  # a repeated (step, module): the last wins
        held = np.zeros(len(names), dtype=bool)
        held[modules[present]] = True
        rows, columns = np.unique(steps[present]), in_model_order[held[in_model_order]]
        return pd.DataFrame(
            grid[np.ix_(rows, columns)],
            index=pd.Index(step_values[rows], name="step"),
            columns=pd.Index(names[columns], name="module"),
        )

    def _layer_codes(self) -> tuple[np.ndarray, ...]:
        """Step and module codes of the layer rows, their values, and the module codes in model order
        (modules the model does not list last, by name)."""
        steps, step_values = pd.factorize(self.layers["step"], sort=True)
        modules, names = pd.factorize(self.layers["module"], sort=True)
        order = self.module_order()
        rank = {name: len(order) - 1 - i for i, name in enumerate(reversed(order))}  # a repeated name: its first place
        ranks = np.array([rank.get(name, len(order)) for name in names], dtype="int64")
        in_model_order = np.lexsort((np.arange(len(names)), ranks))
        return steps, np.asarray(step_values), modules, np.asarray(names, dtype=object), in_model_order

    def module_label(self, name: str | None) -> str:
        """A module as a person finds it in their code: ``model.2 (Linear)``, ``model (Net)``.

        The probes record ``named_modules()`` names, which for a ``Sequential``
        are bare indices ("2"); prefixed with ``model.`` and followed by the
        class they read as the attribute path they are.
        """
        if not name:
            return ""
        if name.startswith("(") and name != "(model)":
            return name  # the probes' own pseudo-modules, e.g. "(output)"
        if name == "(model)":
            path, kind = "model", (self.meta.get("model") or {}).get("class")
        else:
            path, kind = f"model.{name}", self._module_types().get(name)
        return f"{path} ({kind})" if kind else path

    def _module_types(self) -> dict[str, str]:
        return self.kept(("module types",), self._read_module_types)

    def _read_module_types(self) -> dict[str, str]:
        modules = (self.meta.get("model") or {}).get("modules") or []
        pairs = (m if isinstance(m, (list, tuple)) else (m.get("name"), m.get("type")) for m in modules)
        return {str(n): str(t) for n, t, *_ in pairs if n is not None and t}

    def module_order(self) -> list[str]:
        """Module names in model definition order (input side first), when known."""
        modules = (self.meta.get("model") or {}).get("modules") or []
        names = [m[0] if isinstance(m, (list, tuple)) else m.get("name") for m in modules]
        if names:
            return [n for n in names if n is not None]
        if "module" in self.layers.columns:
            return list(dict.fromkeys(self.layers["module"].dropna()))
        return []
