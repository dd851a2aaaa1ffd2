"""The code table: every rule, once, in one ordered tuple (as ruff's ``codes.rs``).

``all_rules()`` and ``get_rule()`` read this table and nothing else; no rule is
found by importing a module for its side effects.

How to add a rule
-----------------
1. Pick the file from the prefix of its code (``PREFIXES`` below; a new prefix
   gets a row there first, with its category and file).
2. Write one class deriving from ``Rule`` in that file: code, name, title,
   category, severity, ``requires``, thresholds with sources, the four docstring
   sections, and ``check`` (see ``diagnose.rules.base``). Helpers that two rules
   share go into ``diagnose.rules.helpers``; a rule module never imports another
   rule module.
3. Add one row to ``RULES``, in code order.
4. Record a bad and a good example run under
   ``sample_runs/examples/<CODE>/bad.<ext>`` and ``.../good.<ext>``.

``tests/test_codes.py`` checks the table: unique codes and names, code order,
prefixes that match the category and the file, and no rule class left out.
"""

from __future__ import annotations

from collections.abc import Iterable

from diagnose.rules import (
    activations,
    bugs,
    distributed,
    generalization,
    gradients,
    initialization,
    numerics,
    optimization,
    preflight,
    resources,
)
from diagnose.rules.base import Category, Rule

# Code prefix -> (category, module in diagnose/rules/ that holds its rules).
PREFIXES: dict[str, tuple[Category, str]] = {
    "ACT": (Category.ACTIVATIONS, "activations"),
    "AMP": (Category.RESOURCES, "resources"),
    "BUG": (Category.BUGS, "bugs"),
    "CH": (Category.INITIALIZATION, "initialization"),
    "DST": (Category.DISTRIBUTED, "distributed"),
    "GRD": (Category.GRADIENTS, "gradients"),
    "INIT": (Category.INITIALIZATION, "initialization"),
    "LR": (Category.OPTIMIZATION, "optimization"),
    "MEM": (Category.RESOURCES, "resources"),
    "NF": (Category.NUMERICS, "numerics"),
    "NOI": (Category.OPTIMIZATION, "optimization"),
    "OVF": (Category.GENERALIZATION, "generalization"),
    "PLT": (Category.OPTIMIZATION, "optimization"),
    "PRE": (Category.PREFLIGHT, "preflight"),
    "SPK": (Category.OPTIMIZATION, "optimization"),
    "ZL": (Category.GENERALIZATION, "generalization"),
}

RULES: tuple[type[Rule], ...] = (
    activations.DeadReLUs,
    activations.SaturatedUnits,
    activations.RepresentationCollapse,
    resources.SkippedAmpSteps,
    bugs.GradientsNotReset,
    bugs.ParametersOutsideOptimizer,
    bugs.UpdatesExactlyZero,
    bugs.GradientExactlyZero,
    bugs.ModulesInEvalMode,
    bugs.OutputDoesNotFitLoss,
    bugs.SoftmaxCrossEntropyFloor,
    bugs.LossBroadcastWarning,
    bugs.InputsNotNormalised,
    bugs.IdenticalUnits,
    bugs.FunctionalActivationTrouble,
    bugs.LearningRateCollapsed,
    bugs.LabelsSortedByClass,
    bugs.NonFiniteMadeInLoss,
    bugs.LossFallsWithoutBound,
    bugs.StepBeforeBackward,
    bugs.ClipFarBelowGradient,
    bugs.AccumulationNotDivided,
    bugs.RecurrentWithoutClipping,
    bugs.WeightDecayTooLarge,
    bugs.RegressionLossOnClasses,
    bugs.LinearLayersWithoutActivation,
    bugs.LossNotConnectedToModel,
    bugs.LabelsCarryNoInformation,
    bugs.SaturatingActivationsVanish,
    bugs.GraphCutInsideModel,
    bugs.RecurrentBatchAxisSwapped,
    bugs.LossTensorsKept,
    bugs.ValidationDataUnlikeTraining,
    initialization.ChancePlateau,
    initialization.ValidationNeverBeatsChance,
    initialization.ValidationAccuracyNeverChanges,
    initialization.SlowStartAtChance,
    distributed.RankOutlier,
    distributed.NonFiniteOnOneRank,
    distributed.StragglerRank,
    distributed.ParameterDesync,
    distributed.UnevenSteps,
    gradients.ExplodingGradients,
    gradients.VanishingGradients,
    gradients.UpdateRatioOffScale,
    gradients.LayerWithoutGradient,
    initialization.BadInitialLoss,
    optimization.LossDiverges,
    optimization.LateLearningRateTooHigh,
    optimization.LearningRateTooLow,
    optimization.LearningRateDecayedEarly,
    resources.MemoryLeak,
    resources.NearOutOfMemory,
    numerics.NonFiniteLoss,
    numerics.NonFiniteMetric,
    numerics.FinalEvaluationBlowUp,
    optimization.NoisyLoss,
    generalization.Overfitting,
    generalization.AccuracyGap,
    generalization.UnstableValidation,
    generalization.ValidationRisesWithoutLearning,
    generalization.LossGap,
    generalization.WideningGap,
    generalization.ValidationAgainstTraining,
    generalization.ValidationMetricFalls,
    optimization.TrainingStalled,
    optimization.ShortRunLearnedNothing,
    preflight.PreflightExperimentFailed,
    preflight.LabelsOutOfRange,
    preflight.NonFiniteInputs,
    preflight.InputsNotNormalised,
    preflight.InitialLossOffChance,
    preflight.ParametersWithoutGradient,
    preflight.SamplesMixedInBatch,
    preflight.CannotOverfitOneBatch,
    preflight.IgnoresInputs,
    preflight.LearningRateTooHigh,
    preflight.LearningRateSuggestion,
    optimization.LossSpikes,
    generalization.LossAtZero,
)


def all_rules() -> list[type[Rule]]:
    """Every rule, in the order of the table."""
    return list(RULES)


def get_rule(code_or_name: str) -> type[Rule]:
    """The one rule with this code (``LR001``) or name (``loss-diverges``); KeyError otherwise."""
    wanted = code_or_name.strip()
    for rule in RULES:
        if wanted.upper() == rule.code or wanted.lower() == rule.name:
            return rule
    raise KeyError(code_or_name)


def split_patterns(values: str | Iterable[str]) -> list[str]:
    """``"LR,NF001"`` or ``["LR", "NF001,SPK"]`` -> ``["LR", "NF001", "SPK"]``."""
    items = [values] if isinstance(values, str) else list(values)
    return [part.strip() for item in items for part in item.split(",") if part.strip()]


def matches(rule: type[Rule], pattern: str) -> bool:
    """A pattern is a code, a code prefix (``LR``) or a rule name."""
    wanted = pattern.strip()
    return rule.code.startswith(wanted.upper()) or rule.name == wanted.lower()


def select_rules(patterns: str | Iterable[str]) -> list[type[Rule]]:
    """The rules that codes, prefixes, names or comma lists of them pick, in table order."""
    wanted = split_patterns(patterns)
    return [rule for rule in RULES if any(matches(rule, p) for p in wanted)]


def prefix_of(code: str) -> str:
    """``"INIT001"`` -> ``"INIT"``."""
    return code.rstrip("0123456789")
