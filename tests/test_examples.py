"""Bad and good examples from real logs of the shared corpus beside the checkout, read in place (never copied).

The recorded examples under ``sample_runs/examples/`` are run by
``test_rule_examples.py``; these are the real logs that back the rules changed
for issue 10 (chance level only with evidence, zero losses, adversarial losses).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from real_corpus import CORPUS

import diagnose
from diagnose.rules import analyze, get_rule

# Real logs of the shared corpus, read in place: (code, bad or good, path in the corpus).
SHARED = [
    ("CH001", "bad", "keras_csv/DeepDiagnosis_ICSE2022_MNIST_Normal_double_random.csv"),  # pinned at ln 10
    ("CH001", "good", "keras_csv/DeepDiagnosis_ICSE2022_Blob_config_random_22eb.csv"),  # near ln 3, 40% accuracy
    ("CH001", "good", "hf_trainer_state/NijatZeynalov_mT5-azerbaijani-news_final.json"),
    ("ZL001", "bad", "hf_trainer_state/aryan1112003_hate_speech_detection_final.json"),  # 0.0 for the last third
    ("ZL001", "good", "yolo_results_csv/Grafit-Kil_helmet-detection-yolov5_exp2_results.csv"),  # one-class cls_loss 0
    # A healthy WGAN: its critic and generator losses are not meant to fall.
    ("LR001", "good", "keras_history_json/Maanasvee_wgan-cifar10_history.json"),
    ("GRD001", "good", "keras_history_json/Maanasvee_wgan-cifar10_history.json"),
]


def codes_in(path: Path) -> set[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runs = diagnose.load_all(path)
    return {f.code for run in runs for f in analyze(run).findings}


def judge(code: str, kind: str, path: Path) -> None:
    get_rule(code)  # the folder names a rule of the code table
    found = codes_in(path)
    if kind == "bad":
        assert code in found, f"{path.name} should raise {code}, got {sorted(found)}"
    else:
        assert code not in found, f"{path.name} should not raise {code}"


@pytest.mark.skipif(CORPUS is None, reason="the shared corpus of real logs is not beside this checkout")
@pytest.mark.parametrize(("code", "kind", "name"), SHARED)
def test_real_example(code, kind, name):
    judge(code, kind, CORPUS / name)


@pytest.mark.skipif(CORPUS is None, reason="the shared corpus of real logs is not beside this checkout")
@pytest.mark.parametrize(
    ("name", "objective"),
    [
        ("keras_history_json/Maanasvee_wgan-cifar10_history.json", "adversarial"),  # critic_loss + gen_loss
        ("hf_trainer_state/Rusheel86_Chaos-Economy_grpo_training_logs.json", "reinforcement"),  # reward columns
        ("hf_trainer_state/CoralReefFish_whisper-tiny-nbaiLab_final.json", "supervised"),
    ],
)
def test_the_kind_of_objective_is_recognised(name, objective):
    run = diagnose.load(CORPUS / name)
    assert run.objective == objective
    skipped = {code for code, _ in analyze(run).not_evaluated}
    assert ("LR001" in skipped) == (objective != "supervised")
