"""The training loops' shared parts (lvdr.training): the learning-rate schedules the PRM, the DiffAE and DenseNet121 use."""

import pytest

from lvdr.training import lr_factor


def test_learning_rate_warms_up_then_decays_to_zero():
    factors = [lr_factor(step, 100, 0.1, "cosine") for step in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[9:], factors[10:])) and factors[-1] < 0.01
    assert lr_factor(50, 100, 0.0, "constant") == 1.0 and lr_factor(0, 100, 0.0, "cosine") == 1.0
    assert [lr_factor(s, 100, 0.0, "step") for s in (0, 49, 50, 74, 75, 99)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
