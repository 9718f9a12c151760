"""The explanation checks and the verdict sentences the report prints under each of them."""

import numpy as np

from lvdr.explain.trajectories import centroid_approach, evidence_correlation, evidence_correlation_within_index
from lvdr.explain.verdicts import every_seed, norm_across_seeds, verdicts


def checks(rho=0.3, p=1e-4, shift_top=0.2, shift_random=0.05, del_p=0.01, classes=(0, 1), norm_rho=0.5, norm_p=1e-3,
           pos_rho=0.2, pos_p=1e-3, within=0.9, shift_usual=0.1, p_usual=0.01, drop_top=-0.1, drop_random=0.02):
    return {"correlation": {"rho": rho, "p": p, "n_steps": 120},
            "correlation_position": {"rho": pos_rho, "p": pos_p, "n_steps": 120, "within": within},
            "norm": {"rho": norm_rho, "p": norm_p, "range": 0.3, "grade_means": {0: 1.0, 1: 1.3}},
            "deletion": {"n_sequences": 20, "shift_top": shift_top, "shift_random": shift_random, "p_shift": del_p,
                         "shift_usual": shift_usual, "p_shift_usual": p_usual,
                         "drop_top": drop_top, "drop_random": drop_random, "p_drop": 0.9,
                         "predicted_classes": list(classes)}}


def test_a_model_that_learned_gets_supporting_verdicts():
    v = verdicts(checks())
    assert [v[k][0] for k in ("evidence", "position", "deletion", "deletion_position", "norm")] == ["supports"] * 5
    assert "ρ = 0.3, p = 0.0001" in v["evidence"][1]
    assert "lowest for grade 0, the grade nearest the start" in v["norm"][1]


def test_each_failed_check_says_so():
    v = verdicts(checks(rho=-0.21, p=2.8e-6, shift_top=0.01, shift_random=0.02, norm_p=0.4, pos_rho=-0.1, shift_usual=0.05))
    assert [v[k][0] for k in ("evidence", "position", "deletion", "deletion_position", "norm")] == ["does not support"] * 5
    assert "ρ = -0.21" in v["evidence"][1]
    assert verdicts(checks(del_p=0.3))["deletion"][0] == "inconclusive"
    assert verdicts(checks(p_usual=0.3))["deletion_position"][0] == "inconclusive"
    # no stronger than the deletion test it refines
    assert verdicts(checks(shift_top=0.004, shift_random=0.005, shift_usual=0.001))["deletion_position"][0] == "does not support"
    assert verdicts(checks(del_p=0.3))["deletion_position"][0] == "inconclusive"
    assert verdicts({**checks(), "deletion": {**checks()["deletion"], "shift_usual": None}})["deletion_position"][0] == "not applicable"


def test_the_deletion_verdict_reads_how_much_the_prediction_changes_and_reports_the_signed_drop():
    # a step size has no sign: largest steps on conflicting evidence raise P(predicted) when deleted (a negative
    # drop), yet change the prediction more than random slices do; the verdict says both
    v = verdicts(checks(drop_top=-0.1, drop_random=0.02))
    assert v["deletion"][0] == "supports"
    assert "changes the prediction by 0.2" in v["deletion"][1] and "drops by -0.1 against 0.02" in v["deletion"][1]
    assert verdicts(checks(shift_top=0.05, shift_random=0.2, drop_top=0.3))["deletion"][0] == "does not support"


def test_a_collapsed_model_has_nothing_to_explain():
    v = verdicts(checks(classes=(0,)))
    assert {word for word, _ in v.values()} == {"not applicable"}
    assert "predicts class 0 for every test sequence" in v["evidence"][1]


def test_tiny_effects_print_without_negative_zero():
    v = verdicts(checks(shift_top=0.0, shift_random=0.0, drop_top=-0.0, drop_random=0.0))
    assert "-0" not in v["deletion"][1]


def test_a_raw_correlation_that_position_explains_is_called_out():
    v = verdicts(checks(pos_rho=-0.01, pos_p=0.9))
    assert v["evidence"][0] == "supports" and v["position"][0] == "does not support"
    assert "where the evidence slices lie" in v["position"][1]


def trajectories(step_of, n_seq, length, rng):
    """Trajectories whose step at index i (slice i + 1) has size step_of(i, evidence of that slice)."""
    out, evidence = [], []
    for s in range(n_seq):
        ev = rng.uniform(0, 1, length)
        P = np.zeros((length, 2))
        for i in range(1, length):
            P[i] = P[i - 1] + [step_of(i - 1, ev[i]), 0.0]
        rows = np.arange(length) + s * length
        out.append({"P": P, "row": rows, "grade": 0, "split": "test"})
        evidence.append(ev)
    return out, np.concatenate(evidence)


def test_the_within_index_correlation_separates_a_settling_memory_from_one_that_reads_evidence():
    rng = np.random.default_rng(0)
    # a memory whose steps only shrink as it settles, on scans whose evidence also falls along the sequence
    settling, _ = trajectories(lambda i, e: 0.7 ** i * rng.uniform(0.9, 1.1), 40, 10, rng)
    ev = np.concatenate([np.linspace(1, 0, 10) + rng.uniform(0, 0.1, 10) for _ in range(40)])
    raw = evidence_correlation(settling, ev)
    within = evidence_correlation_within_index(settling, ev)
    assert raw["rho"] > 0.5 and raw["p"] < 1e-6
    assert abs(within["rho"]) < 0.15 and within["p"] > 0.01 and within["within"] < 0.1
    assert verdicts({**checks(), "correlation": raw, "correlation_position": within})["position"][0] == "inconclusive"
    # a memory that also moves with what the slice shows keeps its correlation at each index
    reading, ev2 = trajectories(lambda i, e: 0.7 ** i * (0.5 + e), 40, 10, rng)
    within2 = evidence_correlation_within_index(reading, ev2)
    assert within2["rho"] > 0.9 and within2["p"] < 1e-6 and within2["within"] > 0.9
    assert verdicts({**checks(), "correlation_position": within2})["position"][0] == "supports"
    # a memory that moves most mid-sequence, where the evidence mostly is, but at each index against it
    against, ev3 = trajectories(lambda i, e: (1 + 3 * (3 <= i <= 5)) * (1.5 - e) * rng.uniform(0.9, 1.1), 40, 10, rng)
    ev3 = ev3 + 2 * np.tile(np.isin(np.arange(10), [4, 5, 6]), 40)
    assert evidence_correlation(against, ev3)["rho"] > 0.2
    within3 = evidence_correlation_within_index(against, ev3)
    assert within3["rho"] < -0.5 and within3["p"] < 1e-6
    assert verdicts({**checks(), "correlation_position": within3})["position"][0] == "does not support"
    assert evidence_correlation_within_index([], ev)["rho"] is None


def test_referral_verdicts():
    def referral(auroc, p, n_wrong=4, after=0.93):
        curve = [{"referred": 0.0, "n_kept": 20, "accuracy": 0.8}, {"referred": 0.3, "n_kept": 14, "accuracy": after}]
        return {"error_auroc": auroc, "error_p": p, "n_wrong": n_wrong, "passes": 20, "curve": curve}

    def verdict(r):
        return verdicts({**checks(), "referral": r})["referral"]

    assert verdict(referral(0.85, 0.01))[0] == "supports"
    assert "0.93 on the 14 left" in verdict(referral(0.85, 0.01))[1]
    assert verdict(referral(0.6, 0.3))[0] == "inconclusive"
    assert verdict(referral(0.4, 0.8))[0] == "does not support"
    assert verdict(referral(0.51, 0.48, after=0.71))[0] == "does not support"  # referring made the rest worse
    assert verdict(referral(None, None, n_wrong=0))[0] == "not applicable"
    assert verdicts(checks())["referral"][0] == "not applicable"  # not measured


def norm(rho, p, means):
    return {"rho": rho, "p": p, "grade_means": {str(g): m for g, m in enumerate(means)}}


def test_the_norm_reading_must_hold_across_seeds_in_one_direction():
    """Each seed may find ||P_t|| following the grade; across seeds it must do so the same way, and by more
    than a grade's norm varies from seed to seed (the demo's SPIDER: rho -0.67 on one draw, +0.86 on another)."""
    agree = [norm(0.8, 1e-6, [1.0, 1.2, 1.4]), norm(0.7, 1e-5, [1.05, 1.25, 1.45]), norm(0.75, 1e-4, [0.95, 1.2, 1.35])]
    assert norm_across_seeds(agree)[0] == "supports"
    flipped = agree[:2] + [norm(-0.7, 1e-5, [1.4, 1.2, 1.0])]
    word, why = norm_across_seeds(flipped)
    assert word == "does not support" and "disagree on its direction" in why and "0.8, 0.7, -0.7" in why
    assert "the grade nearest the start (lowest mean ||P_t||) 0, 0, 2" in why  # the flipped seed starts at the top grade
    shifted = [norm(0.8, 1e-6, [1.0, 1.1, 1.2]), norm(0.8, 1e-6, [2.0, 2.1, 2.2]), norm(0.8, 1e-6, [0.5, 0.6, 0.7])]
    word, why = norm_across_seeds(shifted)  # each seed orders the grades, but the seeds' norms differ far more
    assert word == "does not support" and "differ less than the seeds do" in why
    weak = agree[:2] + [norm(0.2, 0.3, [1.0, 1.1, 1.3])]
    assert "not every seed" in norm_across_seeds(weak)[1]
    assert norm_across_seeds(agree[:1])[0] == "not applicable"


def paths_to(targets, grades, rng, length=8, noise=0.05):
    """Straight paths from the common start 0 to each sequence's target state, a little noise on every state."""
    return [{"P": np.linspace(0, 1, length + 1)[1:, None] * target + rng.normal(0, noise, (length, len(target))),
             "grade": int(g), "split": "test"} for target, g in zip(targets, grades)]


def test_the_centroid_check_tells_paths_that_head_for_their_grade_from_paths_that_do_not():
    """The PCA figure's reading: grade g's paths end near c_g, with c_g on an ordered curve (a grade further
    away is a centroid further away); the same paths with the grades shuffled must fail every part."""
    rng = np.random.default_rng(0)
    corners = {g: np.array([np.cos(g * 0.6), np.sin(g * 0.6), 0.3 * g]) for g in range(5)}
    grades = rng.integers(0, 5, 120)
    train = paths_to([corners[g] for g in grades], grades, rng)
    test_grades = rng.integers(0, 5, 60)
    test = paths_to([corners[g] for g in test_grades], test_grades, rng)
    c = centroid_approach(train, test)
    assert c["n_sequences"] == 60 and c["agreement"] > 0.9 and c["p_agreement"] < 1e-6
    assert c["margin_last"] > c["margin_first"] and c["p_rise"] < 1e-6 and c["order_rho"] > 0.8 and c["order_p"] < 0.01
    v = verdicts({**checks(), "centroid": c})
    assert v["centroid"][0] == v["order"][0] == "supports" and "its own grade's for" in v["centroid"][1]
    shuffled = [{**t, "grade": int(g)} for t, g in zip(test, rng.permutation(test_grades))]
    word, why = verdicts({**checks(), "centroid": centroid_approach(train, shuffled)})["centroid"]
    assert word == "does not support" and "no more often than chance" in why and "do not head for" in why
    # centroids out of the grades' order: grade 2's paths where grade 4's should be, and the reverse
    swapped = {**corners, 2: corners[4], 4: corners[2]}
    train_swapped = paths_to([swapped[g] for g in grades], grades, rng)
    c = centroid_approach(train_swapped, paths_to([swapped[g] for g in test_grades], test_grades, rng))
    v = verdicts({**checks(), "centroid": c})
    assert c["agreement"] > 0.9 and v["centroid"][0] == "supports"  # the paths still end at their own centroid
    assert v["order"][0] == "does not support" and "nearer grades far from theirs" in v["order"][1]
    # two grades: no order to test; one grade, or no test path: nothing to check
    binary = paths_to([corners[g % 2] for g in test_grades], test_grades % 2, rng)
    assert verdicts({**checks(), "centroid": centroid_approach(binary, binary)})["order"][0] == "not applicable"
    assert centroid_approach(train[:0], test)["n_sequences"] == 0
    assert verdicts(checks())["centroid"][0] == verdicts(checks())["order"][0] == "not applicable"


def test_every_seed():
    yes, no, na = ("supports", "a"), ("does not support", "b"), ("not applicable", "two classes")
    assert every_seed([yes, yes]) == ("supports", "supports in 2 of 2 seeds")
    assert every_seed([yes, no, na]) == ("does not support", "supports in 1 of 2 seeds")
    assert every_seed([na, na]) == na and every_seed([])[0] == "not applicable"
