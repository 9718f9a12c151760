"""MC-dropout uncertainty and the referral curve (lvdr.explain.uncertainty)."""

import numpy as np
import torch

from lvdr.prm.model import PRM
from lvdr.prm.train import Sequence, run_sequences
from lvdr.explain.uncertainty import mc_dropout_probabilities, predictive_entropy, referral, referral_curve
from test_prm import C, D, K, Z, prm_config


def test_entropy_is_zero_for_certain_and_log_c_for_uniform_passes():
    certain = np.tile([[[0.0, 1.0, 0.0]]], (4, 1, 1))
    uniform = np.full((4, 1, 3), 1 / 3)
    assert np.isclose(predictive_entropy(certain)[0], 0.0)
    assert np.isclose(predictive_entropy(uniform)[0], np.log(3))
    # passes that disagree with confidence are uncertain in the mean: [1, 0] and [0, 1] -> log 2
    split = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    assert np.isclose(predictive_entropy(split)[0], np.log(2))


def test_referral_drops_the_most_uncertain_first():
    correct = np.array([True] * 7 + [False] * 3)
    uncertainty = np.array([0.1] * 7 + [0.9] * 3)  # the errors are the most uncertain
    curve = referral_curve(correct, uncertainty, abs_error=(~correct).astype(float))
    assert [c["n_kept"] for c in curve] == [10, 9, 8, 7]
    assert [c["accuracy"] for c in curve] == [0.7, 7 / 9, 7 / 8, 1.0]
    assert curve[-1]["mae"] == 0.0
    # an uncertainty that ranks the right decisions first makes the rest worse, not better
    worse = referral_curve(correct, -uncertainty)
    assert worse[-1]["accuracy"] == 4 / 7 and "mae" not in worse[-1]


def test_referral_breaks_ties_by_order_not_by_correctness():
    correct = np.array([False, True, True, False])
    curve = referral_curve(correct, np.zeros(4), referred=(0.25, 0.5))
    assert [c["accuracy"] for c in curve] == [2 / 3, 0.5]  # the first sequences go first, right or wrong


def _model_and_features(dropout):
    torch.manual_seed(0)
    cfg = prm_config(dropout=dropout, slot_dropout=dropout, stochastic_depth=dropout)
    model = PRM(C, K, D, 3, cfg, Z).eval()
    rng = np.random.default_rng(0)
    features = (rng.normal(size=(30, Z)).astype(np.float32), rng.normal(size=(30, K, C)).astype(np.float16))
    seqs = [Sequence(f"s{i}", "test", i % 3, int(i % 3 > 0), np.arange(5 * i, 5 * i + 5), np.arange(5)) for i in range(6)]
    return model, features, seqs


def test_mc_passes_are_seeded_stochastic_and_leave_the_model_in_eval_mode():
    model, features, seqs = _model_and_features(0.3)
    a = mc_dropout_probabilities(model, seqs, features, passes=5, seed=1)
    assert a.shape == (5, 6, 3) and np.allclose(a.sum(2), 1)
    assert not model.training
    assert np.array_equal(a, mc_dropout_probabilities(model, seqs, features, passes=5, seed=1))
    assert np.abs(a[0] - a[1]).max() > 1e-4  # dropout on: the passes differ
    # without any dropout every pass is the deterministic model
    plain, features, seqs = _model_and_features(0.0)
    b = mc_dropout_probabilities(plain, seqs, features, passes=3, seed=1)
    deterministic = np.stack([r["probs"] for r in run_sequences(plain, seqs, features, "cpu", latents=False)])
    assert np.allclose(b, deterministic[None], atol=1e-6)


def test_referral_reports_the_deterministic_decisions_and_how_well_uncertainty_finds_errors():
    model, features, seqs = _model_and_features(0.3)
    result = referral(model, seqs, features, passes=8, seed=0)
    probs = np.stack([r["probs"] for r in run_sequences(model, seqs, features, "cpu", latents=False)])
    correct = probs.argmax(1) == np.array([s.grade for s in seqs])
    assert result["curve"][0]["accuracy"] == correct.mean() and result["n_wrong"] == (~correct).sum()
    assert result["curve"][0]["mae"] is not None  # three classes: graded
    assert len(result["per_sequence"]["entropy"]) == 6
    if 0 < correct.sum() < 6:
        assert 0 <= result["error_auroc"] <= 1 and 0 <= result["error_p"] <= 1
