#!/usr/bin/env python3
"""Builds the tiny random models of plugin/llama/testdata/families/.

One model per Llama-like family that plugin/llama runs (llama, mistral,
qwen2 with q/k/v biases, qwen3 with per-head q/k RMSNorm, gemma3), made with
transformers from a config (no download, fixed seed): 2 layers, hidden 64,
4 heads / 2 kv heads, vocab 256, no tokenizer (the Go test feeds token ids).
gemma3 (Gemma3ForCausalLM, bfloat16) has 3 layers (sliding, global,
sliding), head_dim 32, query_pre_attn_scalar 24, a sliding window of 6 on
its 24 tokens (GEMMA_TOKENS), rope_local_base_freq 10000 and a linear rope
scaling of 4 on the global layer.
Each is saved as a Hugging Face folder (config.json + model.safetensors;
mistral in bfloat16, the others float32) with, beside it, the float32
reference logits of transformers (eager attention) for the ids in
tokens.json: logits.f32, little-endian [len(tokens), vocab].

The weights are re-drawn with larger scales than transformers' init (std
0.02 gives near-constant logits, which would hide errors; Gemma's norm
weights, which multiply by 1+w, around 0); each
reference is transformers loading the saved folder in float32 (a bfloat16
model's weights widened to float32, which is what nwc computes with).

Usage (the venv with torch + transformers; names: only those families):
  $NWC_CACHE/venv-train/bin/python scripts/make_tiny_families.py [name ...]
"""
import json
import os
import sys

import numpy as np
import torch
import transformers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "plugin", "llama", "testdata", "families")

TOKENS = [1, 17, 200, 3, 99, 42, 42, 7, 255, 128, 64, 5, 0, 31, 180, 77]
# Longer than gemma3's sliding window (6), so that its mask matters.
GEMMA_TOKENS = [2, 17, 200, 3, 99, 42, 42, 7, 255, 128, 64, 5, 0, 31, 180, 77,
                9, 250, 13, 13, 101, 66, 4, 222]

COMMON = dict(
    vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
    hidden_act="silu", bos_token_id=1, eos_token_id=2,
)

FAMILIES = {
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM, torch.float32,
              dict(rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False)),
    "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM, torch.bfloat16,
                dict(rope_theta=1000000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
                     sliding_window=None, head_dim=16)),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM, torch.float32,
              dict(rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
                   use_sliding_window=False, sliding_window=None)),
    "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM, torch.float32,
              dict(rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
                   head_dim=32, use_sliding_window=False, sliding_window=None)),
    "gemma3": (transformers.Gemma3TextConfig, transformers.Gemma3ForCausalLM, torch.bfloat16,
               dict(rope_theta=1000000.0, rope_local_base_freq=10000.0, rms_norm_eps=1e-6,
                    tie_word_embeddings=True, head_dim=32, query_pre_attn_scalar=24,
                    sliding_window=6, num_hidden_layers=3,
                    layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                    rope_scaling={"rope_type": "linear", "factor": 4.0},
                    hidden_activation="gelu_pytorch_tanh", bos_token_id=2, eos_token_id=1,
                    pad_token_id=0)),
}


def redraw(model, gen, norm_center=1.0):
    """Re-draws every parameter: norms ~ norm_center + 0.2 N, biases ~ 0.5 N,
    matrices ~ N / sqrt(fan_in) (embedding ~ N)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if "norm" in name:
                v = norm_center + 0.2 * r
            elif name.endswith(".bias"):
                v = 0.5 * r
            elif "embed_tokens" in name:
                v = r
            else:
                v = r / np.sqrt(p.shape[1])
            p.copy_(v)


def main():
    only = set(sys.argv[1:])
    unknown = only - set(FAMILIES)
    if unknown:
        sys.exit(f"unknown families {sorted(unknown)} (have {sorted(FAMILIES)})")
    torch.manual_seed(0)
    for i, (name, (cfg_cls, model_cls, dtype, extra)) in enumerate(FAMILIES.items()):
        if only and name not in only:
            continue
        gemma = name.startswith("gemma")
        common = dict(COMMON)
        if gemma:  # Gemma3TextConfig names its activation hidden_activation
            del common["hidden_act"]
        cfg = cfg_cls(**{**common, **extra})
        cfg._attn_implementation = "eager"
        model = model_cls(cfg).eval()
        redraw(model, torch.Generator().manual_seed(1000 + i), norm_center=0.0 if gemma else 1.0)
        tokens = GEMMA_TOKENS if gemma else TOKENS
        model = model.to(dtype)
        d = os.path.join(OUT, name)
        os.makedirs(d, exist_ok=True)
        model.save_pretrained(d, safe_serialization=True)
        gc = os.path.join(d, "generation_config.json")
        if os.path.exists(gc):
            os.remove(gc)
        # The reference: transformers loading the saved folder in float32
        # (not model.to(float32), which would keep the rotary inv_freq
        # buffer rounded to bfloat16).
        ref = model_cls.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
        with torch.no_grad():
            logits = ref(torch.tensor([tokens])).logits[0].float().numpy()
        logits.astype("<f4").tofile(os.path.join(d, "logits.f32"))
        with open(os.path.join(d, "tokens.json"), "w") as f:
            json.dump(tokens, f)
            f.write("\n")
        size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
        print(f"{name}: {dtype}, {size} bytes, logits {logits.shape}, max|logit| {np.abs(logits).max():.3g}")


if __name__ == "__main__":
    main()
