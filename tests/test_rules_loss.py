"""How the loss-curve rules decide, on recorded sample runs and on small logs with one known trait."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from sample_files import EXAMPLES, scenario_file

import diagnose
from diagnose.rules import Severity, analyze, get_rule
from diagnose.rules.config import RuleConfig


def sample(name: str):
    return diagnose.load(scenario_file(name))


def write_log(tmp_path: Path, rows: list[dict], meta: dict | None = None) -> Path:
    """A minimal-form log (one JSON object per line), non-finite values spelled as the schema says."""
    path = tmp_path / "run.jsonl"
    lines = []
    if meta is not None:
        lines.append(json.dumps({"kind": "meta", "metadata": meta}))
    for row in rows:
        lines.append(json.dumps({k: ("NaN" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}))
    path.write_text("\n".join(lines) + "\n")
    return path


def findings(run, code: str):
    rule = get_rule(code)
    return list(rule().check(run, RuleConfig().thresholds_for(rule)))


def decaying(n: int, seed: int = 0, floor: float = 0.3, noise: float = 0.03) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.arange(n)
    return (2.0 * np.exp(-x / (n / 6)) + floor) * np.exp(rng.normal(0, noise, n))


class TestNonFinite:
    def test_names_the_module_that_made_the_first_nan(self):
        [finding] = findings(sample("nan_log"), "NF001")
        assert finding.severity == Severity.ERROR
        assert finding.module is not None and finding.evidence["where"] in ("forward", "backward", "loss")
        assert finding.onset == finding.evidence["first_step"]

    def test_a_climb_before_the_nan_blames_the_learning_rate(self, tmp_path):
        loss = list(decaying(60)) + list(np.geomspace(0.4, 40, 20)) + [math.nan] * 5
        rows = [{"step": i + 1, "loss": v} for i, v in enumerate(loss)]
        [finding] = findings(diagnose.load(write_log(tmp_path, rows)), "NF001")
        assert "learning rate" in finding.causes[0] and finding.onset == 81
        assert "lower the learning rate" in finding.fixes[0]

    def test_a_smooth_fall_into_nan_points_at_a_numerical_edge_case(self, tmp_path):
        loss = list(decaying(80)) + [math.nan] * 3
        rows = [{"step": i + 1, "loss": v} for i, v in enumerate(loss)]
        [finding] = findings(diagnose.load(write_log(tmp_path, rows)), "NF001")
        assert "not climbing" in finding.causes[0]

    def test_isolated_nonfinite_gradient_norms_are_only_a_note(self, tmp_path):
        rows = [
            {"step": i + 1, "loss": v, "grad_norm": math.nan if i in (3, 9) else 1.0}
            for i, v in enumerate(decaying(50))
        ]
        [finding] = findings(diagnose.load(write_log(tmp_path, rows)), "NF001")
        assert finding.severity == Severity.INFO

    def test_spikes_leading_into_the_nan_are_not_reported_again(self):
        codes = analyze(sample("nan_log")).codes
        assert codes[0] == "NF001" and "SPK001" not in codes


class TestLearningRate:
    def test_explosion_then_chance_level_is_blamed_on_the_learning_rate(self):
        codes = analyze(sample("lr_too_high")).codes
        assert codes.index("LR001") < codes.index("CH001")

    def test_late_bounce_reports_the_best_step_to_keep(self):
        [finding] = findings(sample("lr_too_high_late"), "LR002")
        assert finding.evidence["end_over_best"] > 1.2
        assert f"step {finding.onset:g}" in finding.fixes[-1]

    def test_a_bounce_is_not_also_reported_as_a_plateau(self):
        # The bounce's high stretch is flat once smoothed, so PLT001 sees a stall there too.
        analysis = diagnose.analyze(sample("lr_too_high_late"))
        assert ("PLT001", "LR002") in [(f.code, by) for f, by in analysis.superseded]
        assert "PLT001" not in [f.code for f in analysis.findings]

    def test_negative_losses_are_not_judged(self, tmp_path):
        rng = np.random.default_rng(0)
        loss = np.linspace(-0.1, 0.5, 200) + rng.normal(0, 0.05, 200)
        rows = [{"step": i + 1, "loss": float(v)} for i, v in enumerate(loss)]
        run = diagnose.load(write_log(tmp_path, rows))
        assert not findings(run, "LR001") and not findings(run, "PLT001")

    def test_decay_that_follows_a_plateau_is_not_too_early(self, tmp_path):
        loss = np.r_[decaying(40), np.full(160, decaying(40)[-1])]
        lr = np.r_[np.full(60, 1e-3), np.full(140, 1e-6)]
        rows = [
            {"step": i + 1, "loss": float(v), "lr": float(r)} for i, (v, r) in enumerate(zip(loss, lr, strict=True))
        ]
        assert findings(diagnose.load(write_log(tmp_path, rows)), "LR004") == []

    def test_decay_too_early_says_how_much_of_the_run_was_wasted(self):
        [finding] = findings(sample("lr_decayed_early"), "LR004")
        assert finding.evidence["wasted_fraction"] > 0.8


class TestChance:
    def test_class_prior_sets_the_chance_level(self, tmp_path):
        prior = [0.9, 0.1]
        entropy = -sum(p * math.log(p) for p in prior)
        rng = np.random.default_rng(1)
        rows = [{"step": i + 1, "loss": float(entropy * math.exp(rng.normal(0, 0.01)))} for i in range(100)]
        run = diagnose.load(write_log(tmp_path, rows, meta={"num_classes": 2, "class_prior": prior}))
        [finding] = findings(run, "CH001")
        assert finding.evidence["chance_level"] == pytest.approx(entropy, rel=1e-5)

    def test_accuracy_well_above_chance_rules_it_out(self):
        assert findings(sample("bad_init"), "CH001") == []

    def test_slowly_falling_loss_near_chance_is_not_stuck(self):
        assert findings(sample("lr_too_low"), "CH001") == []

    @staticmethod
    def unbalanced(tmp_path, first_accuracies: list[float]) -> diagnose.Run:
        """Training and validation loss at ln 2 for 30 epochs; accuracy 0.62 at the end, after the given start."""
        rng = np.random.default_rng(4)
        accuracy = first_accuracies + [0.62] * (30 - len(first_accuracies))
        at_chance = math.log(2) * np.exp(rng.normal(0, 0.003, (30, 2)))
        rows = [
            {"step": i + 1, "loss": train, "val_loss": val, "val_accuracy": a}
            for i, ((train, val), a) in enumerate(zip(at_chance.tolist(), accuracy, strict=True))
        ]
        return diagnose.load(write_log(tmp_path, rows))

    def test_accuracy_is_judged_against_a_constant_prediction_on_unbalanced_classes(self, tmp_path):
        # The first five evaluations score 0.553 to every digit: one class predicted, its share 55%.
        [finding] = findings(self.unbalanced(tmp_path, [0.553] * 5), "CH001")
        assert finding.evidence["chance_level"] == pytest.approx(math.log(2)) and finding.evidence["accuracy"] > 0.6

    def test_accuracy_ten_points_above_half_rules_out_chance_without_that_reading(self, tmp_path):
        assert findings(self.unbalanced(tmp_path, [0.553] * 4 + [0.56]), "CH001") == []

    def test_a_model_right_from_the_first_evaluation_is_no_constant_prediction(self, tmp_path):
        assert findings(self.unbalanced(tmp_path, [0.995] * 5), "CH001") == []


def sit_then_fall(wait: int, fall: int, level: float = math.log(2), seed: int = 2) -> list[float]:
    """A loss at ``level`` for ``wait`` points, then falling to 0.4x of it over ``fall`` points."""
    rng = np.random.default_rng(seed)
    curve = np.r_[np.full(wait, level), level * np.geomspace(1.0, 0.4, fall)]
    return list(curve * np.exp(rng.normal(0, 0.005, len(curve))))


class TestSlowStart:
    def run_of(self, tmp_path, loss, meta=None):
        rows = [{"step": i + 1, "loss": float(v)} for i, v in enumerate(loss)]
        return diagnose.load(write_log(tmp_path, rows, meta=meta))

    def test_half_the_run_at_chance_before_the_fall_is_a_slow_start(self, tmp_path):
        [finding] = findings(self.run_of(tmp_path, sit_then_fall(50, 50)), "CH004")
        assert finding.severity == Severity.WARNING and finding.onset == 1
        assert finding.evidence["share_at_chance"] == pytest.approx(0.5, abs=0.06)
        assert "started at it" in finding.evidence["why_this_level"]

    def test_a_short_wait_is_an_ordinary_start(self, tmp_path):
        assert findings(self.run_of(tmp_path, sit_then_fall(20, 80)), "CH004") == []

    def test_a_loss_falling_steadily_through_chance_did_not_sit_there(self, tmp_path):
        loss = math.log(2) * np.geomspace(1.035, 0.85, 100)  # in the band for its first 38%, at one speed
        assert findings(self.run_of(tmp_path, loss), "CH004") == []

    def test_the_loss_must_end_min_fall_below_chance(self, tmp_path):
        rule = get_rule("CH004")
        run = self.run_of(tmp_path, sit_then_fall(50, 50))  # ends 0.92 below ln 2 in log units
        assert list(rule().check(run, {**rule.threshold_defaults(), "min_fall": 0.8}))
        assert not list(rule().check(run, {**rule.threshold_defaults(), "min_fall": 1.0}))

    def test_a_wait_of_few_logged_points_is_not_judged(self, tmp_path):
        assert findings(self.run_of(tmp_path, sit_then_fall(4, 10)), "CH004") == []  # 5 points, 36% of 14
        assert findings(self.run_of(tmp_path, sit_then_fall(10, 12)), "CH004")

    def test_a_stay_at_chance_that_begins_late_is_a_plateau_not_a_slow_start(self, tmp_path):
        loss = [*np.geomspace(3.0, 0.72, 35), *sit_then_fall(45, 20)]
        assert findings(self.run_of(tmp_path, loss, meta={"num_classes": 2}), "CH004") == []

    def test_a_loss_that_never_leaves_chance_is_ch001s(self, tmp_path):
        run = self.run_of(tmp_path, sit_then_fall(90, 10)[:92])
        assert findings(run, "CH004") == [] and findings(run, "CH001")

    def test_a_level_without_evidence_is_not_chance(self, tmp_path):
        # Sits at ln 2 after falling from 3.0, with no accuracy or metadata to say 0.693 means chance.
        loss = [*np.geomspace(3.0, 0.72, 10), *sit_then_fall(50, 40)]
        assert findings(self.run_of(tmp_path, loss), "CH004") == []
        assert findings(self.run_of(tmp_path, loss, meta={"num_classes": 2}), "CH004")

    def test_a_resumed_run_is_not_judged(self, tmp_path):
        rows = [{"step": 5000 + i, "loss": float(v)} for i, v in enumerate(sit_then_fall(50, 50))]
        assert findings(diagnose.load(write_log(tmp_path, rows)), "CH004") == []


class TestOverfitting:
    def test_reports_the_best_validation_step(self):
        run = sample("overfitting")
        [finding] = findings(run, "OVF001")
        val = run.series("val_loss")
        assert finding.onset == val.idxmin()
        assert finding.evidence["last_val_loss"] > finding.evidence["best_val_loss"]

    def test_a_noisy_validation_curve_around_a_level_is_not_overfitting(self, tmp_path):
        rng = np.random.default_rng(3)
        rows = [{"step": i + 1, "loss": float(v)} for i, v in enumerate(decaying(400))]
        rows += [{"step": 20 * (k + 1), "val_loss": float(0.5 * math.exp(rng.normal(0, 0.2)))} for k in range(20)]
        assert findings(diagnose.load(write_log(tmp_path, rows)), "OVF001") == []

    @pytest.mark.parametrize("train_falls", [True, False])
    def test_only_a_training_loss_falling_beyond_its_noise_widens_the_gap(self, tmp_path, train_falls):
        """A validation loss that wanders within its own noise after its best is overfitting only when the
        training loss clearly keeps falling; a flat training loss near zero whose smoothed end happens to
        sit lower (per-step scatter of 2-3x) adds nothing to the gap."""
        rng = np.random.default_rng(5)
        level = np.geomspace(0.02, 0.0005, 320) if train_falls else np.full(320, 0.002)
        rows = [{"step": i + 1, "loss": float(v * math.exp(rng.normal(0, 1.0)))} for i, v in enumerate(level)]
        val = [0.019, 0.011, 0.010, 0.032, 0.010, 0.0056, 0.0060, 0.0095, 0.0107, 0.0108]
        rows += [{"step": 32 * (k + 1), "val_loss": v} for k, v in enumerate(val)]
        found = findings(diagnose.load(write_log(tmp_path, rows)), "OVF001")
        assert bool(found) is train_falls

    @pytest.mark.parametrize(
        ("accuracy_later", "val_later", "fires"),
        [
            (0.997, 0.015, False),  # as accurate as at the best, under the entropy of 99.7% (0.0204)
            (0.990, 0.015, True),  # fewer examples right than at the best (99.7%)
            (0.997, 0.030, True),  # above the entropy of 99.7%: confident where it is wrong
            (0.900, 0.015, True),  # under 95% accurate: not the near-perfect classifier spared
        ],
    )
    def test_a_rise_at_near_perfect_accuracy_is_spared_only_while_accuracy_and_entropy_hold(
        self, tmp_path, accuracy_later, val_later, fires
    ):
        """A validation loss that doubles from 0.007 while the classifier stays right on 99.7% of new
        examples and its loss stays under the entropy of that accuracy moves its confidence on a few
        examples; the same rise with the accuracy falling, or above that entropy, is overfitting."""
        rows = [{"step": i + 1, "loss": float(v)} for i, v in enumerate(np.geomspace(0.2, 0.002, 200))]
        val = [0.12, 0.03, 0.015, 0.010, 0.008, 0.007] + [val_later * f for f in (0.9, 1.1, 0.95, 1.05) * 3]
        for k, v in enumerate(val):
            accuracy = 0.997 if k < 6 else accuracy_later
            rows.append({"step": 10 * (k + 1), "val_loss": float(v), "val_accuracy": accuracy})
        assert bool(findings(diagnose.load(write_log(tmp_path, rows)), "OVF001")) is fires

    @pytest.mark.parametrize(
        ("val", "fires"),
        [
            ([3.29, 3.236, 3.261, 3.294, 3.323], True),  # best, then up at each of the last three (2.6%)
            ([3.29, 3.236, 3.261, 3.250, 3.323], False),  # one evaluation back down: not unbroken
            ([3.29, 3.236, 3.261, 3.294], False),  # only two rises after the best
            ([3.29, 3.236, 3.237, 3.238, 3.239], False),  # three rises of 0.1%: a flat curve
            ([3.20, 3.30, 3.236, 3.261, 3.294, 3.323], False),  # the rise starts above the lowest evaluation
        ],
    )
    def test_a_short_rise_counts_only_unbroken_from_the_best(self, tmp_path, val, fires):
        """Five evaluations whose rise is too small for the noise test of the later half (2.6% against
        min_rise's 8.3%): overfitting only when each of the last three stands above the one before,
        from the lowest evaluation of the run, by more than 2% in all, the training loss falling."""
        rows = [{"step": i + 1, "loss": float(v)} for i, v in enumerate(np.geomspace(3.1, 2.8, 50))]
        rows += [{"step": 10 * (k + 1), "val_loss": v} for k, v in enumerate(val)]
        found = findings(diagnose.load(write_log(tmp_path, rows)), "OVF001")
        assert bool(found) is fires
        if fires:
            assert found[0].onset == 20

    def test_an_unbroken_rise_needs_a_falling_training_loss(self, tmp_path):
        rows = [{"step": i + 1, "loss": 2.9} for i in range(50)]
        rows += [{"step": 10 * (k + 1), "val_loss": v} for k, v in enumerate([3.29, 3.236, 3.261, 3.294, 3.323])]
        assert findings(diagnose.load(write_log(tmp_path, rows)), "OVF001") == []

    def test_an_unbroken_rise_from_a_lucky_low_of_a_noisy_curve_is_not_enough(self, tmp_path):
        """A validation loss that scatters 20% from one evaluation to the next, whose last four happen to
        come in rising order from its lowest: a rise of 16% is within two errors of that noise."""
        rng = np.random.default_rng(7)
        val = list(0.5 * np.exp(rng.normal(0, 0.2, 30)))
        val += [min(val) * 0.99, min(val) * 1.05, min(val) * 1.1, min(val) * 1.16]
        rows = [{"step": i + 1, "loss": float(v)} for i, v in enumerate(np.geomspace(0.6, 0.2, 340))]
        rows += [{"step": 10 * (k + 1), "val_loss": float(v)} for k, v in enumerate(val)]
        assert findings(diagnose.load(write_log(tmp_path, rows)), "OVF001") == []


class TestGapConfirmedByAMetric:
    """A validation loss that stalls while the training loss falls (OVF006), or an accuracy gap that grows
    (OVF002), is a warning when the validation metric has stopped improving while its training value keeps
    improving; while the validation metric still improves it stays a note."""

    @staticmethod
    def run_with(tmp_path, val_accuracy, *, with_loss: bool = True):
        rng = np.random.default_rng(11)
        rows = [
            {"step": i + 1, "loss": float(v), "accuracy": float(a)}
            for i, (v, a) in enumerate(zip(np.geomspace(1.0, 0.2, 300), np.linspace(0.6, 0.97, 300), strict=True))
        ]
        val_loss = 0.9 * np.exp(rng.normal(0, 0.01, len(val_accuracy)))
        val_loss[:2] = [1.2, 1.0]
        for k, (v, a) in enumerate(zip(val_loss, val_accuracy, strict=True)):
            loss = {"val_loss": float(v)} if with_loss else {}
            rows.append({"step": 10 * (k + 1), "val_accuracy": float(a), **loss})
        return diagnose.load(write_log(tmp_path, rows))

    @staticmethod
    def flat(rng_seed: int = 12) -> np.ndarray:
        rng = np.random.default_rng(rng_seed)
        return np.r_[0.62, 0.68, np.full(28, 0.72)] + rng.normal(0, 0.004, 30)

    @pytest.mark.parametrize(("stops", "severity"), [(True, Severity.WARNING), (False, Severity.INFO)])
    def test_a_stalled_validation_loss_is_a_warning_when_accuracy_stops_too(self, tmp_path, stops, severity):
        val_accuracy = self.flat() if stops else np.linspace(0.6, 0.8, 30)
        [finding] = findings(self.run_with(tmp_path, val_accuracy), "OVF006")
        assert finding.severity == severity
        assert finding.evidence["stalled_metrics"] == (["val_accuracy"] if stops else [])

    @pytest.mark.parametrize("metric", [None, "samples_per_second"])
    def test_without_a_quality_metric_the_stalled_validation_loss_stays_a_note(self, tmp_path, metric):
        """No metric, or one that measures no quality (throughput rising in training, flat in evaluation)."""
        extra = (lambda key, v: {key: v}) if metric else (lambda key, v: {})
        rows = [
            {"step": i + 1, "loss": float(v), **extra(metric, 100.0 + i)}
            for i, v in enumerate(np.geomspace(1, 0.2, 300))
        ]
        rows += [
            {"step": 10 * (k + 1), "val_loss": 0.9 + 0.005 * (-1) ** k, **extra(f"val_{metric}", 50.0)}
            for k in range(30)
        ]
        [finding] = findings(diagnose.load(write_log(tmp_path, rows)), "OVF006")
        assert finding.severity == Severity.INFO and finding.evidence["stalled_metrics"] == []

    @pytest.mark.parametrize(("stops", "severity"), [(True, Severity.WARNING), (False, Severity.INFO)])
    def test_a_growing_accuracy_gap_is_a_warning_once_validation_accuracy_stops(self, tmp_path, stops, severity):
        val_accuracy = self.flat() if stops else np.linspace(0.6, 0.7, 30)
        [finding] = findings(self.run_with(tmp_path, val_accuracy, with_loss=False), "OVF002")
        assert finding.severity == severity
        assert ("stopped improving" in finding.message) is stops


class TestValidationAgainstTraining:
    @staticmethod
    def run_with(tmp_path, val):
        rows = [{"step": i + 1, "loss": float(v)} for i, v in enumerate(np.geomspace(1.0, 0.05, 400))]
        rows += [{"step": 20 * (k + 1), "val_loss": float(v)} for k, v in enumerate(val)]
        return diagnose.load(write_log(tmp_path, rows))

    def test_two_jumps_never_followed_by_a_new_best_are_enough(self, tmp_path):
        """The validation loss has settled at 0.47-0.49 and jumps 1.6x twice while the training loss
        falls; after neither does it beat 0.47 again: two jumps, both unrecovered, fire."""
        val = [1.0, 0.8, 0.65, 0.55, 0.5, 0.48, 0.47, 0.47, 0.75, 0.48]
        val += [0.49, 0.48, 0.49, 0.48, 0.77, 0.49, 0.48, 0.49, 0.48, 0.49]
        [finding] = findings(self.run_with(tmp_path, val), "OVF008")
        assert finding.evidence["jumps"] == 2 and finding.evidence["unrecovered"] == 2

    def test_jumps_each_followed_by_a_new_low_are_a_noisy_healthy_run(self, tmp_path):
        val = np.geomspace(1.0, 0.2, 20)
        val[[6, 9, 12, 15]] *= 1.6
        assert findings(self.run_with(tmp_path, val), "OVF008") == []


class TestValidationMetricFalls:
    """OVF009: a validation quality metric that falls for good from its best while the training loss falls."""

    @staticmethod
    def run_with(tmp_path, metrics: dict[str, np.ndarray], val_loss: np.ndarray | None = None):
        rows = [{"step": i + 1, "loss": float(v)} for i, v in enumerate(np.geomspace(2.0, 0.05, 400))]
        for k in range(len(next(iter(metrics.values())))):
            row = {"step": 20 * (k + 1), **{name: float(v[k]) for name, v in metrics.items()}}
            rows.append(row | ({"val_loss": float(val_loss[k])} if val_loss is not None else {}))
        return diagnose.load(write_log(tmp_path, rows))

    @staticmethod
    def peaked(seed: int = 3, end: float = 0.6) -> np.ndarray:
        """Up to 0.7 by the fifth of 20 evaluations, then down to ``end``, with one point of noise."""
        rng = np.random.default_rng(seed)
        return np.r_[np.linspace(0.4, 0.7, 5), np.linspace(0.69, end, 15)] + rng.normal(0, 0.01, 20)

    def test_a_fall_of_ten_points_while_training_improves_fires(self, tmp_path):
        [finding] = findings(self.run_with(tmp_path, {"val_accuracy": self.peaked()}), "OVF009")
        assert finding.evidence["column"] == "val_accuracy" and finding.onset is not None
        assert finding.evidence["level"] - finding.evidence["last"] > 0.05

    def test_a_fall_within_two_points_is_left_alone(self, tmp_path):
        assert findings(self.run_with(tmp_path, {"val_accuracy": self.peaked(end=0.69)}), "OVF009") == []

    def test_a_best_at_the_first_evaluation_is_not_judged(self, tmp_path):
        """Recall 1.0 at the first evaluation is a model predicting one class, not a best to fall from."""
        recall = np.r_[1.0, np.full(19, 0.8)]
        assert findings(self.run_with(tmp_path, {"val_recall": recall}), "OVF009") == []

    def test_one_example_of_a_small_validation_set_is_no_fall(self, tmp_path):
        """Accuracy on 20 examples moves in steps of 0.05: one example lost for good is within one step,
        although its second differences are mostly zero."""
        accuracy = np.r_[0.6, 0.7, 0.8, 0.85, 0.9, 0.9, 0.9, 0.9, np.full(12, 0.85)]
        assert findings(self.run_with(tmp_path, {"val_accuracy": accuracy}), "OVF009") == []

    def test_a_validation_loss_still_improving_says_otherwise(self, tmp_path):
        improving = np.geomspace(1.0, 0.5, 20)
        assert findings(self.run_with(tmp_path, {"val_accuracy": self.peaked()}, improving), "OVF009") == []

    def test_an_error_metric_falling_is_no_fall(self, tmp_path):
        wer = 1 - self.peaked()
        assert findings(self.run_with(tmp_path, {"val_wer": wer}), "OVF009") == []

    def test_many_metrics_raise_the_bar(self, tmp_path):
        """A fall of about three standard errors passes alone, not among a hundred per-class scores."""
        rng = np.random.default_rng(5)
        level = np.r_[np.linspace(0.5, 0.8, 5), np.full(15, 0.8)]
        fallen = level - np.r_[np.zeros(10), np.full(10, 0.04)] + rng.normal(0, 0.02, 20)
        alone = self.run_with(tmp_path, {"val_f1": fallen})
        assert findings(alone, "OVF009") != []
        many = {f"val_c{k:03d}_f1": level + rng.normal(0, 0.02, 20) for k in range(100)} | {"val_f1": fallen}
        assert findings(self.run_with(tmp_path, many), "OVF009") == []

    def test_a_summary_metric_leads_a_larger_fall_of_one_class(self, tmp_path):
        """A rare tag's F1 falling from 0.7 to 0.3 says less than the overall accuracy falling ten points."""
        metrics = {"val_f1_person": 2 * self.peaked(seed=4) - 0.7, "val_accuracy": self.peaked()}
        [finding] = findings(self.run_with(tmp_path, metrics), "OVF009")
        assert finding.evidence["column"] == "val_accuracy"
        assert finding.evidence["fallen_metrics"] == ["val_accuracy", "val_f1_person"]

    @pytest.mark.parametrize("summary", ["val_f1_macro", "val_map50_95(b)", "val_accuracy_top5"])
    def test_aggregate_and_detector_metrics_count_as_summaries(self, tmp_path, summary):
        metrics = {"val_precision_class_3": 2 * self.peaked(seed=4) - 0.7, summary: self.peaked()}
        [finding] = findings(self.run_with(tmp_path, metrics), "OVF009")
        assert finding.evidence["column"] == summary


class TestPlateau:
    def test_a_smooth_floor_at_full_accuracy_is_a_plateau_even_when_it_starts_late(self):
        """Softmax fed into CrossEntropyLoss (recorded by the bug script): the loss falls for over a third
        of the run and then rests on 1.46 while validation accuracy is 100%: a cap on confidence."""
        run = diagnose.load(EXAMPLES / "BUG007" / "bad.jsonl")
        [finding] = findings(run, "PLT001")
        loss = run.series("loss")
        started = (finding.evidence["stall_step"] - loss.index[0]) / (loss.index[-1] - loss.index[0])
        assert started > get_rule("PLT001").threshold_defaults()["max_start"]
        assert finding.evidence["val_accuracy"] >= 0.95 and "caps its confidence" in finding.message
        assert any("logits" in fix for fix in finding.fixes)

    def test_a_noisy_loss_at_high_accuracy_is_no_cap_on_confidence(self):
        """Accumulated gradients not divided: a loss jumping 0.6-6 at 96% accuracy is confidently wrong
        examples and a too-large step, not a capped output."""
        [finding] = findings(diagnose.load(EXAMPLES / "BUG018" / "bad.jsonl"), "PLT001")
        assert "val_accuracy" not in finding.evidence and "confidence" not in finding.message

    @pytest.mark.parametrize(("level", "fires"), [(0.25, True), (0.15, False)])
    def test_high_accuracy_spares_a_plateau_only_below_what_a_constant_guess_reaches(self, tmp_path, level, fires):
        """95% validation accuracy is also what always guessing the class of a 95/5 data set gets, at a
        loss of 0.199 (the entropy of 0.95): a plateau above that may be such a guess and still counts;
        one below it is a converged model."""
        rng = np.random.default_rng(3)
        loss = np.concatenate([np.geomspace(2 * level, level, 20), np.full(180, level)])
        rows = [{"step": i + 1, "loss": float(v * math.exp(rng.normal(0, 0.005)))} for i, v in enumerate(loss)]
        rows += [{"step": s, "val_loss": level, "val_accuracy": 0.95} for s in range(20, 201, 20)]
        assert bool(findings(diagnose.load(write_log(tmp_path, rows)), "PLT001")) is fires

    def test_a_noisy_run_that_ends_where_it_started_is_flat_from_its_first_step(self):
        """A real binary classifier wandering 0.63-0.71 around ln 2 (now CH001's example, which sets
        PLT001 aside in a report): within three standard errors of its start, so flat from step 0."""
        [finding] = findings(diagnose.load(EXAMPLES / "CH001" / "bad_unbalanced.csv"), "PLT001")
        assert finding.evidence["stall_step"] == 0


class TestOthers:
    def test_bad_init_compares_the_first_loss_with_ln_c(self):
        [finding] = findings(sample("bad_init"), "INIT001")
        assert finding.evidence["expected"] == pytest.approx(math.log(4), rel=1e-5)
        assert finding.evidence["ratio"] > 2

    def test_spikes_give_their_steps_and_recovery(self):
        [finding] = findings(sample("spikes"), "SPK001")
        assert all(step % 70 == 0 for step in finding.steps)
        assert finding.evidence["unrecovered"] == 0

    def test_exact_zero_loss(self):
        [finding] = findings(sample("label_leak"), "ZL001")
        assert finding.evidence["zero_points"] >= 3

    def test_healthy_per_step_noise_is_not_too_noisy(self):
        assert findings(sample("healthy_regression"), "NOI001") == []


def test_the_first_stretch_at_a_level_ends_at_the_first_point_outside_or_at_the_end() -> None:
    from diagnose.rules.initialization import _first_stretch

    logged = np.log([5.0, 2.3, 2.31, 2.29, 1.0, 2.3, 2.3])
    assert _first_stretch(logged, 2.3, 0.01) == (1, 4)
    assert _first_stretch(logged[:4], 2.3, 0.01) == (1, 4)  # inside to the last point
    assert _first_stretch(logged, 7.0, 0.01) is None
