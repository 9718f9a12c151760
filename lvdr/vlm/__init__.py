"""The paper's vision-language baselines (section 3.2): Qwen2.5-VL asked for the grade, zero-shot or after
LoRA instruction tuning. Optional: ``pip install -e ".[vlm]"`` (transformers, peft, accelerate)."""
