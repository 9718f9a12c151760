"""Loading a Qwen2.5-VL checkpoint (a Hugging Face hub id or a local folder), building its image and chat
input, and reading class probabilities from the next-token logits of the grade tokens.

Only transformers' own classes are used (AutoProcessor and Qwen2_5_VLForConditionalGeneration, the
model's chat template), so a tiny randomly initialised model and the real 3B/7B run the same code.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import torch

from lvdr.errors import ConfigError, DataError

log = logging.getLogger(__name__)

MODEL_TYPE = "qwen2_5_vl"
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def require_transformers():
    try:
        import transformers  # noqa: F401
    except ImportError as error:
        raise ConfigError('the Qwen baselines need the vlm extra: pip install -e ".[vlm]"') from error


def check_checkpoint(name: str) -> None:
    """One clear error for a model that is neither a local Qwen2.5-VL folder nor a hub id."""
    path = Path(name).expanduser()
    if path.exists():
        config = path / "config.json"
        if not config.is_file():
            raise DataError(f"{path}: not a Hugging Face model folder (no config.json)")
        require_qwen(str(path), json.loads(config.read_text()).get("model_type"))
    elif not HUB_ID.match(name) or name.startswith((".", "/", "~")):
        raise DataError(f"{name}: no such model folder (and not a Hugging Face hub id like Qwen/Qwen2.5-VL-3B-Instruct)")


def require_qwen(name: str, model_type: str | None) -> None:
    if model_type != MODEL_TYPE:
        raise DataError(f"{name}: not a Qwen2.5-VL checkpoint (model_type {model_type!r}, expected {MODEL_TYPE!r})")


def load(name: str, device: torch.device):
    """(model, processor) from a local folder or the hub (cached by huggingface_hub), bf16 on GPUs that have
    it, fp32 elsewhere; the processor pads on the left, as batched generation needs."""
    require_transformers()
    check_checkpoint(name)
    from transformers import AutoConfig, AutoProcessor, Qwen2_5_VLForConditionalGeneration

    try:
        config = AutoConfig.from_pretrained(name)
    except OSError as error:
        raise DataError(f"{name}: cannot read the model's config ({str(error).splitlines()[0]})") from error
    require_qwen(name, config.model_type)  # a hub model's type is known only now
    dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    processor = AutoProcessor.from_pretrained(name)
    processor.tokenizer.padding_side = "left"
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(name, dtype=dtype).to(device).eval()
    log.info("%s: %.1fM parameters, %s, on %s", name, sum(p.numel() for p in model.parameters()) / 1e6, dtype, device)
    return model, processor


def grade_token_ids(processor, num_classes: int) -> list[int]:
    """The token of each grade's digit; a tokenizer that splits a digit cannot be scored this way."""
    ids = []
    for grade in range(num_classes):
        tokens = processor.tokenizer.encode(str(grade), add_special_tokens=False)
        if len(tokens) != 1:
            raise DataError(f"the model's tokenizer writes the grade {grade} as {len(tokens)} tokens; one is needed")
        ids.append(tokens[0])
    return ids


def image_of(slices: np.ndarray, view: str, size: int):
    """The picture the model sees: the central slice, or a collage of all ``slices`` (T, C, H, W in [0, 1])
    in a near-square grid in reading order, as an RGB image of ``size`` x ``size`` px."""
    from PIL import Image

    if view == "central":
        slices = slices[len(slices) // 2:len(slices) // 2 + 1]
    columns = int(np.ceil(np.sqrt(len(slices))))
    rows = int(np.ceil(len(slices) / columns))
    _, channels, h, w = slices.shape
    grid = np.zeros((rows * h, columns * w, channels), np.float32)
    for i, image in enumerate(slices):
        r, c = divmod(i, columns)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = np.moveaxis(np.asarray(image, np.float32), 0, -1)
    grid = np.repeat(grid, 3, axis=-1) if channels == 1 else grid[..., :3]
    picture = Image.fromarray((grid.clip(0, 1) * 255).round().astype(np.uint8))
    return picture.resize((size, size * rows // columns), Image.Resampling.BICUBIC)


def prompt_text(processor, text: str, answer: str | None = None) -> str:
    """The chat (one image, then the question) through the model's own template, ready for the answer;
    with ``answer``, followed by it and the end-of-turn token, as a fine-tuning example."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return prompt if answer is None else f"{prompt}{answer}{end_of_turn(processor)}"


def end_of_turn(processor) -> str:
    return processor.tokenizer.eos_token or "<|im_end|>"


def model_inputs(processor, texts: list[str], images: list, device):
    return processor(text=texts, images=images, return_tensors="pt", padding=True).to(device)


def autocast(model, device: torch.device):
    """bf16 autocast where the weights are bf16 (GPUs); nothing on the CPU."""
    enabled = device.type == "cuda" and next(model.parameters()).dtype == torch.bfloat16
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


@torch.no_grad()
def grade(model, processor, texts: list[str], images: list, grade_ids: list[int], max_new_tokens: int = 0):
    """Class probabilities (softmax over the grade tokens' next-token logits) and, with ``max_new_tokens``,
    the greedy answers the model writes."""
    device = next(model.parameters()).device
    inputs = model_inputs(processor, texts, images, device)
    with autocast(model, device):
        if not max_new_tokens:
            logits = model(**inputs).logits[:, -1]
            return logits[:, grade_ids].float().softmax(-1).cpu().numpy(), None
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, output_logits=True,
                             return_dict_in_generate=True)
    probs = out.logits[0][:, grade_ids].float().softmax(-1).cpu().numpy()
    answers = processor.batch_decode(out.sequences[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    return probs, answers
