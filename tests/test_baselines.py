"""DiffAE+LR / DiffAE+SVM on latents that carry the grade, and on latents that carry nothing."""

import numpy as np
import pytest

from lvdr.baselines.latent import fit_predict
from lvdr.data import load_prepared
from lvdr.evaluate.metrics import point_metrics
from lvdr.predictions import KEYS

CFG = {"C_grid": [0.01, 1.0], "max_iter": 2000}


def latents(data, signal: float, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(len(data.table), 8))
    z[:, 0] += signal * data.table.grade.to_numpy()
    return z


@pytest.mark.parametrize("method", ["diffae_lr", "diffae_svm"])
def test_informative_latents_are_learned(spider_prepared, method):
    data = load_prepared(spider_prepared)
    predictions, chosen = fit_predict(method, latents(data, 2.0), data, CFG, seed=0)
    assert chosen["C"] in CFG["C_grid"]
    assert list(predictions.columns[:4]) == KEYS and {"p_0", "p_4", "p_bin", "pred"} <= set(predictions.columns)
    assert len(predictions) == data.table.seq_id.nunique()
    np.testing.assert_allclose(predictions[[f"p_{k}" for k in range(5)]].sum(axis=1), 1.0, atol=1e-6)
    train = predictions[predictions.split != "test"]
    assert point_metrics(train, "ordinal", 5)["mae_ord"] < 0.5


def test_uninformative_latents_give_chance_level(spider_prepared):
    data = load_prepared(spider_prepared)
    predictions, _ = fit_predict("diffae_lr", latents(data, 0.0), data, CFG, seed=0)
    # sequence-averaged probabilities of noise features hardly move: predictions collapse towards the prior
    assert predictions.pred.nunique() <= 3


def test_svm_calibrates_with_a_rare_class():
    from lvdr.baselines.latent import make_classifier

    rng = np.random.default_rng(0)
    y = np.array([0] * 10 + [1] * 10 + [2])  # one example of grade 2
    z = rng.normal(size=(len(y), 4)) + y[:, None]
    model = make_classifier("diffae_svm", 1.0, 1000, seed=0, y=y).fit(z, y)
    assert model.predict_proba(z).shape == (len(y), 3)
