"""The Qwen2.5-VL baselines on a tiny, randomly initialised Qwen2.5-VL (tests/tiny_qwen.py), through the code
path of the real 3B and 7B: the strict parser, the image, scores from the grade tokens' logits, zero-shot and
LoRA tuning end to end on the tiny SPIDER demo, resume after a kill, and the errors for a wrong model."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch

from lvdr import config as configs
from lvdr.errors import DataError
from lvdr.vlm.prompts import parse_answer, question


@pytest.mark.parametrize("text, grade", [("2", 2), (" 3.\n", 3), ("Grade: 4", 4), ("grade 0", 0), ("1", 1)])
def test_the_parser_reads_a_grade_and_nothing_else(text, grade):
    assert parse_answer(text, 5) == grade


@pytest.mark.parametrize("text", ["2 or 3", "The grade is 2", "5", "", "two", "2, maybe 3", "12"])
def test_the_parser_refuses_anything_else(text):
    assert parse_answer(text, 5) is None


def test_binary_answers_stop_at_one():
    assert parse_answer("1", 2) == 1 and parse_answer("2", 2) is None


def test_the_question_is_the_papers_and_says_what_the_image_shows():
    assert "Predict the Pfirrmann grade (0-4) for this intervertebral disc." in question("spider", 1)
    assert "central sagittal T2 MRI slice" in question("spider", 1)
    assert "7 sagittal T2 MRI slices" in question("spider", 7)
    assert "edema" in question("brats", 1) and "diabetic retinopathy" in question("retinamnist", 1)


def test_a_collage_keeps_the_slices_in_reading_order():
    from lvdr.vlm.model import image_of

    slices = np.stack([np.full((1, 4, 4), v, np.float32) for v in (0.0, 0.25, 0.5, 0.75, 1.0)])
    collage = np.asarray(image_of(slices, "collage", 12).convert("L"), np.float32) / 255  # 3 x 2 grid of 4 px tiles
    assert collage.shape == (8, 12)
    tiles = [collage[r * 4 + 2, c * 4 + 2] for r in range(2) for c in range(3)]
    np.testing.assert_allclose(tiles, [0.0, 0.25, 0.5, 0.75, 1.0, 0.0], atol=0.03)
    central = np.asarray(image_of(slices, "central", 8).convert("L"), np.float32) / 255
    assert central.shape == (8, 8) and abs(central.mean() - 0.5) < 0.01


def test_the_vlm_extra_is_locked_at_its_pins():
    import tomllib

    from conftest import REPO

    pins = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["vlm"]
    locked = {line.strip().lower() for line in (REPO / "requirements-vlm.lock").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    base = {line.split("==")[0].lower() for line in (REPO / "requirements.lock").read_text().splitlines() if "==" in line}
    assert {p.lower() for p in pins} <= locked
    assert not {line.split("==")[0] for line in locked} & base  # the two locks never pin a package twice


transformers = pytest.importorskip("transformers", reason='the vlm extra is not installed (pip install -e ".[vlm]")')


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    import tiny_qwen

    return tiny_qwen.build(tmp_path_factory.mktemp("qwen") / "tiny")


def qwen_config(model, **finetune) -> dict:
    return configs.validate({"qwen": {"models": {"tiny": str(model)}, "image_size": 56, "batch_size": 4, "max_new_tokens": 4,
                                      "view": "collage", "finetune": {"steps": 4, "batch_size": 2, "eval_every": 2,
                                                                      **finetune}}})["qwen"]


def test_scores_are_the_grade_tokens_next_token_probabilities(tiny_model, spider_prepared):
    from lvdr.data import load_prepared
    from lvdr.vlm import model as vlm
    from lvdr.vlm.run import Examples

    model, processor = vlm.load(str(tiny_model), torch.device("cpu"))
    examples = Examples(load_prepared(spider_prepared), qwen_config(tiny_model), processor)
    seqs = examples.split("val", "test")[:3]
    texts, images = [examples.text(s) for s in seqs], [examples.image(s) for s in seqs]
    ids = vlm.grade_token_ids(processor, 5)
    assert ids == [processor.tokenizer.convert_tokens_to_ids(str(g)) for g in range(5)]
    scored, answers = vlm.grade(model, processor, texts, images, ids, max_new_tokens=3)
    with torch.no_grad():  # the same thing by hand: one forward pass, the last position's logits
        logits = model(**vlm.model_inputs(processor, texts, images, "cpu")).logits[:, -1]
    np.testing.assert_allclose(scored, logits[:, ids].softmax(-1).numpy(), atol=1e-5)
    assert len(answers) == 3 and all(isinstance(a, str) for a in answers)
    forward_only, none = vlm.grade(model, processor, texts, images, ids)
    np.testing.assert_allclose(forward_only, scored, atol=1e-5)
    assert none is None


def test_zero_shot_writes_predictions_answers_and_the_unparseable_share(tiny_model, spider_prepared, tmp_path):
    from lvdr.predictions import read_predictions
    from lvdr.vlm.run import zero_shot

    summary = zero_shot(qwen_config(tiny_model), "tiny", spider_prepared, tmp_path / "zs", tmp_path / "zs.parquet", seed=0,
                        device_name="cpu")
    predictions = read_predictions(tmp_path / "zs.parquet")
    assert set(predictions.split) == {"val", "test"}
    np.testing.assert_allclose(predictions[[f"p_{k}" for k in range(5)]].sum(axis=1), 1.0, atol=1e-5)
    answers = pd.read_csv(tmp_path / "zs" / "answers.csv", keep_default_na=False)
    reread = [parse_answer(a, 5) for a in answers.answer.astype(str)]
    assert summary["unparseable"] == sum(r is None for r in reread) and summary["answers"] == len(predictions)
    assert json.loads((tmp_path / "zs" / "summary.json").read_text())["unparseable_share"] == pytest.approx(
        summary["unparseable"] / len(answers))


def test_lora_tuning_learns_the_answer_and_resumes_after_a_kill(tiny_model, spider_prepared, tmp_path, kill_at, caplog):
    from kill import Killed
    from lvdr.vlm.run import fine_tune

    cfg = qwen_config(tiny_model, steps=24, eval_every=8, lr=0.01, batch_size=4)
    run = lambda name: fine_tune(cfg, "tiny", spider_prepared, tmp_path / name, tmp_path / f"{name}.parquet",  # noqa: E731
                                 seed=1, device_name="cpu")
    run("full")
    curve = pd.read_csv(tmp_path / "full" / "curve.csv")
    assert curve.loss.iloc[-4:].mean() < 0.5 * curve.loss.iloc[:2].mean(), curve.loss.tolist()  # the answer is learned
    assert (tmp_path / "full" / "adapter" / "adapter_model.safetensors").is_file()
    kill_at(10)  # after the checkpoint at step 8
    with pytest.raises(Killed):
        run("resumed")
    caplog.set_level(logging.INFO)
    run("resumed")
    assert "(step 8)" in caplog.text
    resumed = pd.read_csv(tmp_path / "resumed" / "curve.csv")
    np.testing.assert_allclose(resumed.loss, curve.loss, rtol=1e-4)
    a, b = pd.read_parquet(tmp_path / "full.parquet"), pd.read_parquet(tmp_path / "resumed.parquet")
    np.testing.assert_allclose(a.p_bin, b.p_bin, atol=1e-5)
    summary = json.loads((tmp_path / "full" / "summary.json").read_text())
    assert summary["method"] == "qwentiny_finetuned" and summary["best_step"] in (8, 16, 24)


def test_a_model_that_is_not_there_or_not_qwen_is_named(tmp_path):
    from lvdr.vlm.model import check_checkpoint

    with pytest.raises(DataError, match="no-such-folder: no such model folder"):
        check_checkpoint(str(tmp_path / "no-such-folder"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: not a Hugging Face model folder"):
        check_checkpoint(str(tmp_path / "empty"))
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(DataError, match="bert: not a Qwen2.5-VL checkpoint \\(model_type 'bert'"):
        check_checkpoint(str(tmp_path / "bert"))
    check_checkpoint("Qwen/Qwen2.5-VL-3B-Instruct")  # a hub id passes; the download says whether it exists


def test_method_names_round_trip():
    from lvdr.vlm import method_name, parse_method

    assert parse_method(method_name("3b", "zeroshot")) == ("3b", "zeroshot")
    assert parse_method("qwen7b_finetuned") == ("7b", "finetuned")
    assert parse_method("lvdr_no_traj") is None and parse_method("qwen3b_other") is None
