"""The two Qwen baselines, end to end: zero-shot, and LoRA-tuned on the training split.

Both write the shared predictions format for the validation and test sequences (class probabilities from
the grade tokens' logits, so AUC is computed from scores), the answers the model wrote with their strict
reading (``answers.csv``), and ``summary.json`` with the share of answers that could not be read.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from lvdr.data import Prepared, load_prepared
from lvdr.errors import ConfigError, DataError
from lvdr.evaluate.metrics import selection_score
from lvdr.files import atomic_folder, write_csv, write_json
from lvdr.predictions import from_sequence_probs, write_predictions
from lvdr.prm.train import Sequence, improves, sequences
from lvdr.training import Checkpoints, config_hash, pick_device, seed_step, write_curve
from lvdr.vlm import method_name
from lvdr.vlm import model as vlm
from lvdr.vlm.prompts import parse_answer, question

log = logging.getLogger(__name__)


def model_name(cfg: dict, size: str) -> str:
    if size not in cfg["models"]:
        raise ConfigError(f"config key 'qwen.models': no model for size {size!r} (sizes: {', '.join(cfg['models']) or 'none'})")
    return cfg["models"][size]


class Examples:
    """A dataset's sequences as (chat text, image) pairs for the model."""

    def __init__(self, data: Prepared, cfg: dict, processor):
        self.data, self.cfg, self.processor = data, cfg, processor
        self.dataset, self.num_classes = data.meta["dataset"], data.num_classes
        self.seqs = sequences(data, cfg["collage_max"])

    def split(self, *names: str) -> list[Sequence]:
        return [s for s in self.seqs if s.split in names]

    def text(self, seq: Sequence, answer: int | None = None) -> str:
        shown = 1 if self.cfg["view"] == "central" else len(seq.rows)
        return vlm.prompt_text(self.processor, question(self.dataset, shown), None if answer is None else str(answer))

    def image(self, seq: Sequence):
        return vlm.image_of(self.data.slices[seq.rows], self.cfg["view"], self.cfg["image_size"])  # rows in depth order


def predict(model, examples: Examples, seqs: list[Sequence], batch_size: int, max_new_tokens: int, desc: str):
    """Probabilities (N, K) and, with ``max_new_tokens``, the written answers, batch by batch."""
    ids = vlm.grade_token_ids(examples.processor, examples.num_classes)
    probs, answers = [], []
    for start in tqdm(range(0, len(seqs), batch_size), desc=desc, unit="batch", mininterval=1.0):
        batch = seqs[start:start + batch_size]
        p, a = vlm.grade(model, examples.processor, [examples.text(s) for s in batch], [examples.image(s) for s in batch],
                         ids, max_new_tokens)
        probs.append(p)
        answers.extend(a or [])
    return np.concatenate(probs), answers


def frame_of(seqs: list[Sequence], probs: np.ndarray) -> pd.DataFrame:
    table = pd.DataFrame({"seq_id": [s.seq_id for s in seqs], "split": [s.split for s in seqs],
                          "grade": [s.grade for s in seqs], "label_bin": [s.label_bin for s in seqs]})
    return from_sequence_probs(table, probs)


def write_outputs(model, examples: Examples, method: str, name: str, out_dir: Path, predictions_path, seed: int,
                  extra: dict | None = None) -> dict:
    """Answers and probabilities for the validation and test sequences; the predictions, answers and summary."""
    seqs = examples.split("val", "test")
    probs, answers = predict(model, examples, seqs, examples.cfg["batch_size"], examples.cfg["max_new_tokens"], method)
    predictions = frame_of(seqs, probs).assign(seed=seed)
    parsed = [parse_answer(a, examples.num_classes) for a in answers]
    table = predictions[["seq_id", "split", "grade", "pred"]].assign(answer=answers, parsed=pd.array(parsed, dtype="Int64"))
    unreadable = int(table.parsed.isna().sum())
    readable = table[table.parsed.notna()]
    summary = {"method": method, "model": name, "view": examples.cfg["view"], "image_size": examples.cfg["image_size"],
               "answers": len(table), "unparseable": unreadable, "unparseable_share": unreadable / max(1, len(table)),
               "parsed_equals_top_score": float((readable.parsed == readable.pred).mean()) if len(readable) else None,
               **(extra or {})}
    write_csv(out_dir / "answers.csv", table)
    write_json(out_dir / "summary.json", summary)
    write_predictions(predictions_path, predictions)
    log.info("%s: %d answers, %d unparseable (%.0f%%); predictions from the grade tokens' scores written to %s", method,
             len(table), unreadable, 100 * summary["unparseable_share"], predictions_path)
    return summary


def zero_shot(cfg: dict, size: str, prepared_dir, out_dir, predictions_path, seed: int, device_name: str = "auto") -> dict:
    name = model_name(cfg, size)
    device = pick_device(device_name)
    model, processor = vlm.load(name, device)
    examples = Examples(load_prepared(prepared_dir), cfg, processor)
    torch.manual_seed(seed)
    return write_outputs(model, examples, method_name(size, "zeroshot"), name, Path(out_dir), predictions_path, seed)


def fine_tune(cfg: dict, size: str, prepared_dir, out_dir, predictions_path, seed: int, device_name: str = "auto") -> dict:
    """LoRA instruction tuning on the training split (answer tokens only in the loss), the adapter kept at the
    best validation score (MAE or AUC, as for the other methods), a checkpoint at every evaluation to resume from."""
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    name, tcfg, out_dir = model_name(cfg, size), cfg["finetune"], Path(out_dir)
    device = pick_device(device_name)
    model, processor = vlm.load(name, device)
    data = load_prepared(prepared_dir)
    examples = Examples(data, cfg, processor)
    train_seqs, val_seqs = examples.split("train"), examples.split("val")
    if not train_seqs or not val_seqs:
        raise DataError(f"{prepared_dir}: fine-tuning needs sequences in both the train and the val split")
    torch.manual_seed(seed)
    model = get_peft_model(model, LoraConfig(r=tcfg["lora_r"], lora_alpha=tcfg["lora_alpha"], lora_dropout=tcfg["lora_dropout"],
                                             target_modules=tcfg["target_modules"], task_type="CAUSAL_LM"))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=tcfg["lr"], weight_decay=tcfg["weight_decay"])
    checkpoints = Checkpoints(out_dir / "checkpoints", config_hash({**cfg, "size": size, "model": name, "seed": seed,
                                                                    "train": len(train_seqs)}))
    state = checkpoints.load() or {"step": 0, "curve": [], "best": None, "best_step": 0, "best_adapter": None}
    if state["step"]:
        set_peft_model_state_dict(model, state["adapter"])
        optimizer.load_state_dict(state["optimizer"])
    method = method_name(size, "finetuned")
    log.info("%s: LoRA r %d on %s, %.2fM trainable parameters, %d train / %d val sequences, %d steps of %d",
             method, tcfg["lora_r"], ", ".join(tcfg["target_modules"]), sum(p.numel() for p in trainable) / 1e6,
             len(train_seqs), len(val_seqs), tcfg["steps"], tcfg["batch_size"])
    end = vlm.end_of_turn(processor)
    answer_tokens = 1 + len(processor.tokenizer.encode(end, add_special_tokens=False))  # the digit, then end of turn
    bar = tqdm(total=tcfg["steps"], initial=state["step"], desc=f"fine-tune {method}", unit="step", mininterval=1.0)
    started = time.perf_counter()
    while state["step"] < tcfg["steps"]:
        seed_step(seed, state["step"])
        batch = [train_seqs[i] for i in np.random.randint(0, len(train_seqs), tcfg["batch_size"])]
        inputs = vlm.model_inputs(processor, [examples.text(s, s.grade) for s in batch], [examples.image(s) for s in batch], device)
        labels = torch.full_like(inputs["input_ids"], -100)  # left-padded: every example ends with its answer
        labels[:, -answer_tokens:] = inputs["input_ids"][:, -answer_tokens:]
        model.train()
        with vlm.autocast(model, device):
            loss = model(**inputs, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, tcfg["grad_clip"])
        optimizer.step()
        state["step"] += 1
        row = {"step": state["step"], "loss": loss.item()}
        if state["step"] % tcfg["eval_every"] == 0 or state["step"] == tcfg["steps"]:
            model.eval()
            probs, _ = predict(model, examples, val_seqs, cfg["batch_size"], 0, "validate")
            row["val_score"] = selection_score(frame_of(val_seqs, probs), data.meta["task"])
            better, value = improves("val_score", data.meta["task"], row, state["best"])
            if better:
                state.update(best=value, best_step=state["step"],
                             best_adapter={k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(model).items()})
            bar.set_postfix(loss=f"{loss.item():.3f}", val=f"{row['val_score']:.3f}", best=state["best_step"])
            state["curve"].append(row)
            checkpoints.save({**state, "adapter": get_peft_model_state_dict(model),  # written at once: no copy
                              "optimizer": optimizer.state_dict()})
        else:
            state["curve"].append(row)
        bar.update(1)
    bar.close()
    log.info("%s: trained to step %d (%.0f s this run); kept step %d, validation %s %.4f", method, state["step"],
             time.perf_counter() - started, state["best_step"], "MAE" if data.meta["task"] == "ordinal" else "AUC",
             state["best"])
    set_peft_model_state_dict(model, state["best_adapter"])
    model.eval()
    write_curve(out_dir / "curve.csv", state["curve"])
    with atomic_folder(out_dir / "adapter") as staging:  # the LoRA weights alone (peft's format)
        model.save_pretrained(staging)
    return write_outputs(model, examples, method, name, out_dir, predictions_path, seed,
                         {"best_step": state["best_step"], "steps": state["step"], "lora_r": tcfg["lora_r"]})
