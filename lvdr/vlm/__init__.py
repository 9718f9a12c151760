"""The paper's vision-language baselines (section 3.2): Qwen2.5-VL asked for the grade, zero-shot or after
LoRA instruction tuning. Optional: ``pip install -e ".[vlm]"`` (transformers, peft, accelerate).

The methods' names live here, free of torch, for the CLI, the pipeline's outputs and the report."""

from __future__ import annotations

MODES = {"zeroshot": "zero-shot", "finetuned": "LoRA-tuned"}  # mode -> how the report names it


def method_name(size: str, mode: str) -> str:
    """qwen<size>_<mode>, e.g. qwen3b_zeroshot."""
    return f"qwen{size}_{mode}"


def parse_method(method: str) -> tuple[str, str] | None:
    """(size, mode) of a Qwen method's name, None for any other method."""
    size, _, mode = method.removeprefix("qwen").partition("_")
    return (size, mode) if method.startswith("qwen") and size and mode in MODES else None
