"""The verdict sentences the report prints under each explanation check."""

from lvdr.explain import verdicts


def checks(rho=0.3, p=1e-4, drop_top=0.2, drop_random=0.05, del_p=0.01, classes=(0, 1), norm_rho=0.5, norm_p=1e-3):
    return {"correlation": {"rho": rho, "p": p, "n_steps": 120},
            "norm": {"rho": norm_rho, "p": norm_p, "range": 0.3, "grade_means": {0: 1.0, 1: 1.3}},
            "deletion": {"n_sequences": 20, "drop_top": drop_top, "drop_random": drop_random, "p": del_p,
                         "predicted_classes": list(classes)}}


def test_a_model_that_learned_gets_supporting_verdicts():
    v = verdicts(checks())
    assert [v[k][0] for k in ("evidence", "deletion", "norm")] == ["supports"] * 3
    assert "ρ = 0.3, p = 0.0001" in v["evidence"][1]


def test_each_failed_check_says_so():
    v = verdicts(checks(rho=-0.21, p=2.8e-6, drop_top=0.01, drop_random=0.02, norm_p=0.4))
    assert [v[k][0] for k in ("evidence", "deletion", "norm")] == ["does not support"] * 3
    assert "ρ = -0.21" in v["evidence"][1]
    assert verdicts(checks(del_p=0.3))["deletion"][0] == "inconclusive"


def test_a_collapsed_model_has_nothing_to_explain():
    v = verdicts(checks(classes=(0,)))
    assert {word for word, _ in v.values()} == {"not applicable"}
    assert "predicts class 0 for every test sequence" in v["evidence"][1]


def test_tiny_effects_print_without_negative_zero():
    v = verdicts(checks(drop_top=-0.0, drop_random=0.0))
    assert "-0" not in v["deletion"][1]
