"""GPU memory the Qwen2.5-VL baselines need, estimated from parameter counts (no weights are downloaded).

    python bench/qwen_memory.py

Builds the published 3B and 7B architectures (their config.json values, written out below) on PyTorch's
meta device, counts their parameters and the LoRA adapters of config/paper.yaml, and estimates:
- zero-shot inference in bf16: the weights (2 bytes per parameter) plus activations for one batch;
- LoRA tuning in bf16: the weights, the adapters in fp32 with AdamW's two moments (16 bytes per adapter
  parameter), and the activations the backward pass keeps (about 2 bytes x (6 hidden + 3 MLP widths) per
  token per layer, as the language model stores them without gradient checkpointing).
These are estimates, not measurements: no GPU was lent to measure them (README).
"""

from __future__ import annotations

import torch

from lvdr import config as configs

# from the published config.json files of Qwen/Qwen2.5-VL-3B-Instruct and Qwen/Qwen2.5-VL-7B-Instruct
VISION = {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "patch_size": 14,
          "spatial_merge_size": 2, "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31]}
MODELS = {
    "3b": {"text": {"vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36,
                    "num_attention_heads": 16, "num_key_value_heads": 2}, "out": 2048, "tie": True},
    "7b": {"text": {"vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                    "num_attention_heads": 28, "num_key_value_heads": 4}, "out": 3584, "tie": False},
}
GB = 1024**3


def build(spec: dict):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    config = Qwen2_5_VLConfig(text_config=spec["text"], vision_config={**VISION, "out_hidden_size": spec["out"]},
                              tie_word_embeddings=spec["tie"])
    with torch.device("meta"):
        return Qwen2_5_VLForConditionalGeneration(config)


def main() -> None:
    from peft import LoraConfig, get_peft_model

    cfg = configs.load(["config/paper.yaml"])["qwen"]
    ft = cfg["finetune"]
    side = cfg["image_size"] // 28  # merged visual tokens per side (28 px each)
    tokens = side * side + 80  # the image's tokens and the prompt's
    print(f"batch {cfg['batch_size']} (inference) / {ft['batch_size']} (tuning), about {tokens} tokens per sequence "
          f"({cfg['image_size']} px image), LoRA r {ft['lora_r']} on {', '.join(ft['target_modules'])}")
    print("| model | parameters | weights (bf16) | zero-shot (est.) | LoRA parameters | LoRA tuning (est.) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for size, spec in MODELS.items():
        model = build(spec)
        n = sum(p.numel() for p in model.parameters())
        weights = 2 * n / GB
        t = spec["text"]
        per_token_layer = 2 * (6 * t["hidden_size"] + 3 * t["intermediate_size"])  # bytes kept for the backward pass
        inference = weights + per_token_layer * tokens * cfg["batch_size"] / GB + 1.0  # + CUDA context and workspace
        lora = get_peft_model(model, LoraConfig(r=ft["lora_r"], lora_alpha=ft["lora_alpha"],
                                                target_modules=ft["target_modules"]))
        adapters = sum(p.numel() for p in lora.parameters() if p.requires_grad)
        activations = per_token_layer * t["num_hidden_layers"] * tokens * ft["batch_size"] / GB
        tuning = weights + 16 * adapters / GB + activations + 1.0
        print(f"| {size.upper()} | {n / 1e9:.2f}B | {weights:.1f} GB | {inference:.0f} GB | {adapters / 1e6:.1f}M | "
              f"{tuning:.0f} GB |")


if __name__ == "__main__":
    main()
