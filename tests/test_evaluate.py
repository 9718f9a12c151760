"""The evaluator against hand-computed metrics, and the shared predictions format."""

import math

import numpy as np
import pandas as pd
import pytest

from lvdr.errors import DataError
from lvdr.evaluate.metrics import evaluate, point_metrics, resample_metrics
from lvdr.predictions import aggregate_slices, from_sequence_probs


def ordinal_frame(grades, probs):
    sequences = pd.DataFrame({"seq_id": [f"s{i}" for i in range(len(grades))], "split": "test",
                              "grade": grades, "label_bin": (np.asarray(grades) > 0).astype(int)})
    return from_sequence_probs(sequences, np.asarray(probs, dtype=float))


def fake_prepared(tmp_path, n: int = 20):
    """A prepared folder for an ordinal task with n one-slice sequences s0.., two per patient."""
    from lvdr.files import write_json

    prepared = tmp_path / "prepared"
    prepared.mkdir()
    np.save(prepared / "slices.npy", np.zeros((n, 1, 2, 2), np.float16))
    pd.DataFrame({"row": np.arange(n), "seq_id": [f"s{i}" for i in range(n)],
                  "case_id": [f"p{i // 2}" for i in range(n)]}).to_parquet(prepared / "slices.parquet")
    write_json(prepared / "prepare.json", {"task": "ordinal", "num_classes": 5})
    return prepared


def test_hand_computed_metrics():
    # grades 0,1,2,4 ; predicted argmax 0,2,2,3 ; p_bin = 1 - p_0 = 0.1, 0.7, 0.8, 0.6
    probs = [[0.9, 0.05, 0.05, 0, 0], [0.3, 0.2, 0.5, 0, 0], [0.2, 0.1, 0.7, 0, 0], [0.4, 0, 0, 0.5, 0.1]]
    frame = ordinal_frame([0, 1, 2, 4], probs)
    m = point_metrics(frame, "ordinal", 5)
    assert m["auc_bin"] == pytest.approx(1.0)  # the negative has the lowest p_bin
    assert m["f1_bin"] == pytest.approx(1.0)  # p_bin >= 0.5 exactly for the three positives
    assert m["mae_ord"] == pytest.approx((0 + 1 + 0 + 1) / 4)
    # per-class F1 over grades 0..4: class0 1.0, class1 0 (missed), class2 2/3 (tp1 fp1), class3 0, class4 0
    assert m["f1_ord"] == pytest.approx((1 + 0 + 2 / 3 + 0 + 0) / 5)
    # balanced accuracy over the true grades present: recall 1, 0, 1, 0
    assert m["balanced_acc"] == pytest.approx(0.5)


def test_perfect_and_constant_predictors():
    grades = [0, 0, 1, 2, 3, 4, 1, 0]
    perfect = ordinal_frame(grades, np.eye(5)[grades])
    m = point_metrics(perfect, "ordinal", 5)
    assert m["auc_bin"] == 1.0 and m["f1_bin"] == 1.0 and m["mae_ord"] == 0.0 and m["f1_ord"] == 1.0
    constant = ordinal_frame(grades, np.tile([0.1, 0.6, 0.1, 0.1, 0.1], (len(grades), 1)))
    m = point_metrics(constant, "ordinal", 5)
    assert m["auc_bin"] == 0.5  # ties everywhere: no ranking information
    assert m["mae_ord"] == pytest.approx(np.mean(np.abs(np.asarray(grades) - 1)))


def test_binary_task_has_no_ordinal_metrics():
    frame = ordinal_frame([0, 1, 1, 0], [[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.4, 0.6]])
    m = point_metrics(frame, "binary", 2)
    assert m["mae_ord"] is None and m["f1_ord"] is None
    assert m["auc_bin"] == pytest.approx(0.75)  # positives 0.7, 0.4 vs negatives 0.2, 0.6: 3 of 4 pairs ordered


def test_bootstrap_interval_contains_the_point_estimate():
    rng = np.random.default_rng(0)
    grades = rng.integers(0, 5, 60)
    probs = rng.dirichlet(np.ones(5), 60) * 0.8 + np.eye(5)[grades] * 0.2  # informative, not perfect
    result = evaluate(ordinal_frame(grades, probs), "ordinal", 5, n_boot=200, seed=0)
    for key, value in result.items():
        assert value["ci_low"] <= value["value"] <= value["ci_high"], key
    assert result["mae_ord"]["ci_low"] < result["mae_ord"]["ci_high"]


def test_single_class_test_set_has_no_auc():
    result = evaluate(ordinal_frame([1, 2, 3], np.eye(5)[[1, 2, 3]]), "ordinal", 5, n_boot=20, seed=0)
    assert result["auc_bin"]["value"] is None and result["mae_ord"]["value"] == 0.0


def test_slice_probabilities_average_per_sequence():
    table = pd.DataFrame({"seq_id": ["a", "a", "b", "b", "b"], "split": ["test"] * 5, "grade": [0, 0, 1, 1, 1],
                          "label_bin": [0, 0, 1, 1, 1]})
    probs = np.array([[1.0, 0.0], [0.5, 0.5], [0.2, 0.8], [0.4, 0.6], [0.0, 1.0]])
    pred = aggregate_slices(table, probs).set_index("seq_id")
    assert pred.loc["a", "p_1"] == pytest.approx(0.25) and pred.loc["b", "p_1"] == pytest.approx(0.8)
    assert pred.loc["a", "pred"] == 0 and pred.loc["b", "pred"] == 1
    assert pred.loc["b", "p_bin"] == pytest.approx(0.8)
    assert list(pred.reset_index().columns) == ["seq_id", "split", "grade", "label_bin", "p_0", "p_1", "p_bin", "pred"]
    assert not math.isnan(pred.p_bin.sum())


@pytest.mark.parametrize("task,num_classes", [("ordinal", 5), ("binary", 2)])
def test_vectorised_resamples_match_sklearn(task, num_classes):
    """The bootstrap's weighted closed forms equal sklearn on the resampled rows, ties and missing classes included."""
    rng = np.random.default_rng(1)
    grades = rng.integers(0, num_classes, 30)
    probs = np.round(rng.dirichlet(np.ones(num_classes), 30), 1)  # rounding makes tied scores
    probs /= probs.sum(1, keepdims=True)
    frame = ordinal_frame(grades, probs)
    if task == "binary":
        frame["label_bin"] = frame.grade
    samples = rng.integers(0, 30, (40, 30))
    samples[0] = np.flatnonzero(grades == grades[0])[0]  # one resample with a single class: no AUC
    weights = np.stack([np.bincount(s, minlength=30) for s in samples]).astype(float)
    fast = resample_metrics(frame, task, num_classes, weights)
    for b, sample in enumerate(samples):
        slow = point_metrics(frame.iloc[sample], task, num_classes)
        for key, value in slow.items():
            if value is None:
                assert fast[key] is None
            elif math.isnan(value):
                assert math.isnan(fast[key][b]), (key, b)
            else:
                assert fast[key][b] == pytest.approx(value), (key, b)


def test_a_collapsed_predictor_is_flagged_in_the_log_and_the_report(tmp_path, caplog):
    from lvdr.evaluate.run import evaluate_dataset
    from lvdr.predictions import write_predictions
    from lvdr.report import metrics_table

    prepared = fake_prepared(tmp_path)
    grades = [0, 1, 2, 3, 4, 0]
    write_predictions(tmp_path / "constant.parquet", ordinal_frame(grades, np.tile([0.6, 0.1, 0.1, 0.1, 0.1], (6, 1))))
    write_predictions(tmp_path / "perfect.parquet", ordinal_frame(grades, np.eye(5)[grades]))
    with caplog.at_level("WARNING"):
        results = evaluate_dataset("demo", [tmp_path / "constant.parquet", tmp_path / "perfect.parquet"], prepared,
                                   tmp_path / "metrics.json", n_boot=10, seed=0)
    assert results["methods"]["constant"]["predicted_classes"] == [0]
    assert results["methods"]["perfect"]["predicted_classes"] == [0, 1, 2, 3, 4]
    assert "demo constant predicts class 0 for every test sequence" in caplog.text and "perfect" not in caplog.text
    table = metrics_table(results)
    assert table.count("predicts grade 0 for every sequence") == 1
    # its binary score is constant too: the flag says so, which is why its F1 (bin) can look fine
    assert results["methods"]["constant"]["constant_score"] == [(None, pytest.approx(0.4))]
    assert "the same binary score 0.400" in table


def test_seeds_give_mean_sd_each_value_and_an_interval_over_both(tmp_path):
    from lvdr.evaluate.run import evaluate_dataset
    from lvdr.predictions import write_predictions

    prepared = fake_prepared(tmp_path)
    grades = [0, 1, 2, 3, 4] * 4
    perfect = ordinal_frame(grades, np.eye(5)[grades])
    off_by_one = ordinal_frame(grades, np.eye(5)[np.minimum(np.array(grades) + 1, 4)])
    folder = tmp_path / "predictions" / "lvdr"
    write_predictions(folder / "seed3.parquet", perfect.assign(seed=3))
    write_predictions(folder / "seed4.parquet", off_by_one.iloc[::-1].assign(seed=4))  # row order must not matter
    write_predictions(tmp_path / "predictions" / "single.parquet", perfect)
    files = [folder / "seed3.parquet", folder / "seed4.parquet", tmp_path / "predictions" / "single.parquet"]
    results = evaluate_dataset("demo", files, prepared, tmp_path / "metrics.json", n_boot=200, seed=0)
    lvdr, single = results["methods"]["lvdr"], results["methods"]["single"]
    assert lvdr["n_seeds"] == 2 and lvdr["seeds"] == [3, 4] and lvdr["n_test"] == 20
    assert lvdr["mae_ord"]["seeds"] == [0.0, pytest.approx(0.8)]
    assert lvdr["mae_ord"]["value"] == pytest.approx(0.4) and lvdr["mae_ord"]["sd"] == pytest.approx(0.8 / 2**0.5)
    assert lvdr["mae_ord"]["ci_low"] == 0.0 and lvdr["mae_ord"]["ci_high"] > 0.6  # both seeds' resamples
    assert single["n_seeds"] == 1 and "sd" not in single["mae_ord"] and single["mae_ord"]["ci_high"] == 0.0
    write_predictions(folder / "seed5.parquet", perfect)  # a second file without its seed
    with pytest.raises(DataError, match="one distinct `seed` each"):
        evaluate_dataset("demo", [folder / "seed3.parquet", folder / "seed5.parquet"], prepared, tmp_path / "m.json", 20, 0)


def test_threshold_chosen_on_validation_is_used_for_f1():
    from lvdr.predictions import apply_threshold, choose_threshold

    p, y = np.array([0.40, 0.42, 0.45, 0.46, 0.48]), np.array([0, 0, 1, 1, 1])  # ranked right, all below 0.5
    assert choose_threshold(p, y) == pytest.approx(0.435)
    assert choose_threshold(p, np.ones(5)) == 0.5  # a single class cannot choose
    assert choose_threshold(np.array([0.2, 0.8]), np.array([0, 1])) == 0.5  # every separating cut ties: nearest 0.5
    sequences = pd.DataFrame({"seq_id": list("abcde"), "split": "test", "grade": y, "label_bin": y})
    frame = from_sequence_probs(sequences, np.stack([1 - p, p], 1))
    assert point_metrics(frame, "binary", 2)["f1_bin"] == 0.0  # at 0.5 every sequence is negative
    decided = apply_threshold(frame, choose_threshold(p, y))
    assert point_metrics(decided, "binary", 2)["f1_bin"] == 1.0 and decided.pred.tolist() == y.tolist()
    weights = np.ones((1, 5))
    assert resample_metrics(decided, "binary", 2, weights)["f1_bin"][0] == 1.0


def test_report_says_plainly_when_an_ablation_beats_lvdr():
    from lvdr.report import ablation_verdicts

    def metric(value, sd=None):
        return {"value": value, "ci_low": None, "ci_high": None, **({"sd": sd} if sd is not None else {})}

    methods = {"lvdr": {"mae_ord": metric(0.40, 0.02)}, "lvdr_no_traj": {"mae_ord": metric(0.30, 0.03)},
               "diffae_lr": {"mae_ord": metric(0.1)}}
    [sentence] = ablation_verdicts("ordinal", methods)
    assert "does better than LVDR" in sentence and "does not help here" in sentence
    methods["lvdr_no_traj"]["mae_ord"] = metric(0.41, 0.05)
    assert "LVDR does better than" in ablation_verdicts("ordinal", methods)[0] and "within the seeds' spread" in \
        ablation_verdicts("ordinal", methods)[0]
    methods["lvdr_no_traj"]["mae_ord"] = metric(0.40, 0.05)  # a tie is not "LVDR does better"
    [sentence] = ablation_verdicts("ordinal", methods)
    assert "score the same" in sentence and "does better" not in sentence
    assert ablation_verdicts("binary", {"lvdr": {"auc_bin": metric(0.9)}}) == []


def test_bootstrap_draws_patients_with_all_their_sequences():
    from lvdr.evaluate.metrics import patient_weights

    seq_ids = np.array(["p1_a", "p1_b", "p1_c", "p2_a", "p3_a"])
    cases = {"p1_a": "p1", "p1_b": "p1", "p1_c": "p1", "p2_a": "p2", "p3_a": "p3"}
    weights = patient_weights(seq_ids, cases, 500, np.random.default_rng(0))
    assert np.all(weights[:, 0] == weights[:, 1]) and np.all(weights[:, 1] == weights[:, 2])  # a patient moves as one
    assert np.all(weights[:, [0, 3, 4]].sum(1) == 3)  # three patients drawn per resample
    assert np.all(patient_weights(seq_ids, None, 50, np.random.default_rng(0)).sum(1) == 5)  # no cases: per sequence


def test_paired_difference_is_tighter_than_the_two_intervals_and_sees_a_real_gap():
    from lvdr.evaluate.metrics import paired_difference

    rng = np.random.default_rng(1)
    grades = rng.integers(0, 5, 80)
    noise = rng.dirichlet(np.ones(5), 80)
    good = ordinal_frame(grades, noise * 0.5 + np.eye(5)[grades] * 0.5)
    worse = ordinal_frame(grades, noise * 0.85 + np.eye(5)[grades] * 0.15)  # the same cases, often wrong
    draws_good, draws_worse = {}, {}
    a = evaluate(good, "ordinal", 5, 300, 0, draws_out=draws_good)
    b = evaluate(worse, "ordinal", 5, 300, 0, draws_out=draws_worse)
    d = paired_difference(draws_worse["mae_ord"], draws_good["mae_ord"], b["mae_ord"]["value"] - a["mae_ord"]["value"])
    assert 0 < d["ci_low"] <= d["diff"] <= d["ci_high"]  # a higher MAE on the same patients


def test_accuracy_and_macro_auc_are_medmnists():
    """acc and auc_ovr are the numbers medmnist's own Evaluator computes (getACC, getAUC for multi-class)."""
    from medmnist.evaluator import getACC, getAUC

    rng = np.random.default_rng(2)
    grades = np.repeat(np.arange(5), 12)
    probs = rng.dirichlet(np.ones(5), 60) * 0.7 + np.eye(5)[grades] * 0.3
    m = point_metrics(ordinal_frame(grades, probs), "ordinal", 5)
    assert m["acc"] == pytest.approx(getACC(grades[:, None], probs, "multi-class"))
    assert m["auc_ovr"] == pytest.approx(getAUC(grades[:, None], probs, "multi-class"))
    binary = point_metrics(ordinal_frame(grades > 0, probs[:, :2] / probs[:, :2].sum(1, keepdims=True)), "binary", 2)
    assert binary["acc"] is None and binary["auc_ovr"] is None


def test_expected_calibration_error_of_calibrated_and_overconfident_scores():
    from sklearn.calibration import calibration_curve

    from lvdr.evaluate.metrics import calibration_bins, expected_calibration_error

    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 20000)
    y = rng.uniform(0, 1, p.size) < p  # outcomes drawn with exactly the stated probabilities
    assert expected_calibration_error(y, p) < 0.02
    overconfident = np.where(p > 0.5, 0.99, 0.01)  # certain, but right only as often as p says
    assert expected_calibration_error(y, overconfident) > 0.2
    # the same as sklearn's reliability curve, weighted by how many scores fall in each bin
    truth, mean_p = calibration_curve(y, p, n_bins=10, strategy="uniform")
    counts = np.bincount(calibration_bins(p), minlength=10)
    assert expected_calibration_error(y, p) == pytest.approx(np.sum(counts[counts > 0] * np.abs(truth - mean_p)) / p.size)


def test_temperature_scaling_recovers_an_overconfident_models_temperature():
    from scipy.special import softmax

    from lvdr.evaluate.calibration import fit_temperature, scale

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (4000, 3))
    labels = np.array([rng.choice(3, p=p) for p in softmax(logits, axis=1)])
    overconfident = softmax(2 * logits, axis=1)  # logits twice too large: T = 2 undoes it
    assert fit_temperature(overconfident, labels) == pytest.approx(2.0, rel=0.1)
    assert fit_temperature(softmax(logits, axis=1), labels) == pytest.approx(1.0, rel=0.1)
    assert np.allclose(scale(overconfident, 1.0), overconfident)
    assert np.array_equal(scale(overconfident, 3.0).argmax(1), overconfident.argmax(1))  # rankings are kept


def test_evaluation_reports_ece_before_and_after_temperature_scaling(tmp_path):
    from scipy.special import softmax

    from lvdr.evaluate.run import evaluate_dataset
    from lvdr.predictions import write_predictions

    n = 400
    prepared = fake_prepared(tmp_path, n)
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 1.5, (n, 5))
    grades = np.array([rng.choice(5, p=p) for p in softmax(logits, axis=1)])
    frame = ordinal_frame(grades, softmax(3 * logits, axis=1))  # three times too sure of itself
    frame["split"] = np.where(np.arange(n) % 2, "test", "val")
    write_predictions(tmp_path / "over.parquet", frame)
    write_predictions(tmp_path / "noval.parquet", frame[frame.split == "test"])
    results = evaluate_dataset("demo", [tmp_path / "over.parquet", tmp_path / "noval.parquet"], prepared,
                               tmp_path / "metrics.json", n_boot=20, seed=0)
    t = results["methods"]["over"]["temperature"]
    assert t["per_run"][0] == pytest.approx(3.0, rel=0.25) and t["at_bound"] == [False]
    assert t["ece_after"] < t["ece_before"]
    assert t["ece_before"] == pytest.approx(results["methods"]["over"]["ece_bin"]["value"])
    assert "temperature" not in results["methods"]["noval"]  # no validation sequences to fit on


def test_a_temperature_at_the_fits_bound_is_marked_as_such():
    from lvdr.evaluate.calibration import at_bound, fit_temperature
    from lvdr.report import _temperature

    separable = fit_temperature(np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]]), np.array([0, 1, 0]))
    assert at_bound(separable)  # every validation sequence right: sharpening never stops paying
    assert not at_bound(fit_temperature(np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]]), np.array([0, 1, 1])))
    assert "bound" in _temperature(separable, at_bound(separable))
    assert _temperature(1.23, False) == "1.23"


def test_the_report_names_the_machines_gpus_from_nvidia_smi(tmp_path, monkeypatch):
    """The GPU line comes from nvidia-smi; without it (or when it fails) the machine has none."""
    from lvdr.report import provenance

    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\nprintf 'NVIDIA H200\\nNVIDIA H200\\n'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert "GPU: NVIDIA H200, NVIDIA H200," in provenance.device("auto")
    smi.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    assert provenance.gpus() == "none"
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert provenance.gpus() == "none"
