#!/usr/bin/env python3
"""Parity check of nwc's Llama runtime (plugin/llama) against Hugging Face transformers.

Loads the GGUF's weights with the `gguf` package (dequantized to float32),
un-permutes attn_q/attn_k rows (llama.cpp's converter permutes them for ggml's
rotary embedding), builds a transformers LlamaForCausalLM from a LlamaConfig
made from the GGUF metadata, and compares its float32 logits with the logits
that plugin/llama/cmd/llamadump (Go + ONNX Runtime) writes for the same ids.

Pass: max|diff| <= 1e-3 * max|logit|.

Token ids: --tokens FILE (whitespace-separated ids), else a built-in English
text tokenized with the GGUF's own tokenizer (transformers' GGUF loader), cut
to --seq tokens (default 256).

--nll also compares the mean next-token NLL over non-overlapping windows
(--window, --max-windows) of the token file (--nll-tokens, default: the same
ids), for comparison with the eval harness' perplexity.

Needs torch, transformers, numpy, gguf (the training venv from
scripts/setup-train.sh plus `pip install transformers`, or any venv with them),
Go, and the ONNX Runtime library that nwc uses.

Usage:
  python scripts/hf_parity.py [--model PATH.gguf] [--seq 256] [--tokens ids.txt]
                              [--nll [--nll-tokens ids.txt] [--window 512] [--max-windows 8]]
                              [--threads 2] [--attention standard|gqa] [--json OUT]
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get("NWC_CACHE") or os.path.expanduser("~/.cache/nwc")
DEFAULT_MODEL = os.path.join(CACHE, "models", "smollm2-135m", "SmolLM2-135M-Instruct.Q4_1.gguf")

TEXT = (
    "The history of the city begins in the Roman period, when a small settlement grew up on the "
    "north bank of the river at a place where it could be crossed on foot at low tide. Over the "
    "following centuries the town became an important centre of trade: merchants brought wool, "
    "wine and salt, and the market square was rebuilt in stone after a fire destroyed most of the "
    "wooden houses in 1135. In the nineteenth century the arrival of the railway changed the town "
    "again. Factories were built along the canal, the population doubled within thirty years, and "
    "new schools, a hospital and a public library were opened. Today the old quarter is known for "
    "its narrow streets, its cathedral and its museums, which attract visitors from many countries. "
    "The university, founded in 1962, has about twenty thousand students and is one of the largest "
    "employers in the region. Scientists at its laboratories study climate, medicine and computer "
    "science, and several companies have grown out of their research. The local football club was "
    "founded in 1889 and plays its home matches at a stadium near the river, which can hold about "
    "thirty thousand people. Every summer the town hosts a music festival that lasts for two weeks "
    "and brings together orchestras, choirs and jazz bands from all over Europe."
)


def log(*a):
    print("[hf_parity]", *a, file=sys.stderr, flush=True)


def gguf_meta(reader):
    out = {}
    for k, f in reader.fields.items():
        try:
            v = f.contents()
        except Exception:
            continue
        out[k] = v
    return out


def load_hf_model(path, torch):
    import gguf
    from gguf.quants import dequantize
    from transformers import LlamaConfig, LlamaForCausalLM

    r = gguf.GGUFReader(path)
    m = gguf_meta(r)
    arch = m.get("general.architecture", "llama")
    if arch != "llama":
        raise SystemExit(f"{path}: architecture {arch!r} is not llama")
    g = lambda k, d=None: m.get(f"llama.{k}", d)
    n_head = int(g("attention.head_count"))
    n_kv = int(g("attention.head_count_kv", n_head))
    d = int(g("embedding_length"))
    hd = d // n_head
    tensors = {}
    for t in r.tensors:
        shape = [int(x) for x in reversed(list(t.shape))]
        a = np.ascontiguousarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(shape)
        tensors[t.name] = a
    vocab = tensors["token_embd.weight"].shape[0]
    tied = "output.weight" not in tensors
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=d,
        intermediate_size=int(g("feed_forward_length")),
        num_hidden_layers=int(g("block_count")),
        num_attention_heads=n_head,
        num_key_value_heads=n_kv,
        head_dim=hd,
        rms_norm_eps=float(g("attention.layer_norm_rms_epsilon", 1e-5)),
        max_position_embeddings=int(g("context_length", 2048)),
        tie_word_embeddings=tied,
        rope_parameters={"rope_type": "default", "rope_theta": float(g("rope.freq_base", 10000.0))},
        hidden_act="silu",
    )
    # Older transformers read rope_theta directly.
    cfg.rope_theta = float(g("rope.freq_base", 10000.0))

    def unpermute(w, heads):
        # llama.cpp: w.reshape(heads, 2, rows/heads/2, in).swapaxes(1, 2); undo it.
        out, inp = w.shape
        return w.reshape(heads, out // heads // 2, 2, inp).swapaxes(1, 2).reshape(out, inp)

    sd = {"model.embed_tokens.weight": tensors["token_embd.weight"], "model.norm.weight": tensors["output_norm.weight"]}
    if not tied:
        sd["lm_head.weight"] = tensors["output.weight"]
    parts = {
        "attn_norm": "input_layernorm",
        "attn_q": "self_attn.q_proj",
        "attn_k": "self_attn.k_proj",
        "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj",
        "ffn_norm": "post_attention_layernorm",
        "ffn_gate": "mlp.gate_proj",
        "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj",
    }
    for i in range(cfg.num_hidden_layers):
        for gp, hp in parts.items():
            w = tensors[f"blk.{i}.{gp}.weight"]
            if gp == "attn_q":
                w = unpermute(w, n_head)
            elif gp == "attn_k":
                w = unpermute(w, n_kv)
            sd[f"model.layers.{i}.{hp}.weight"] = w
    try:
        model = LlamaForCausalLM._from_config(cfg, attn_implementation="eager", torch_dtype=torch.float32)
    except TypeError:
        model = LlamaForCausalLM(cfg)
    model = model.float()
    sd = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not (tied and k == "lm_head.weight") and "rotary_emb" not in k]
    if missing or unexpected:
        raise SystemExit(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    if tied:
        model.tie_weights()
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    model.eval()
    return model, cfg


def tokenize_text(path, n):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
    ids = tok(TEXT)["input_ids"]
    while len(ids) < n:
        ids = ids + ids
    return ids[:n]


def read_ids(path):
    with open(path) as f:
        return [int(x) for x in f.read().split()]


def llamadump(args, ids_path, extra):
    exe = os.path.join(tempfile.gettempdir(), "nwc-llamadump")
    subprocess.run(["go", "build", "-o", exe, "./plugin/llama/cmd/llamadump"], cwd=ROOT, check=True)
    cmd = [exe, "-model", args.model, "-tokens", ids_path, "-threads", str(args.threads)]
    if args.attention:
        cmd += ["-attention", args.attention]
    cmd += extra
    log(" ".join(cmd))
    p = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True)
    sys.stderr.write(p.stderr)
    return p.stdout


def hf_nll(model, torch, ids, window, max_windows):
    total, count, wins = 0.0, 0, 0
    for s in range(0, len(ids) - window + 1, window):
        if max_windows and wins >= max_windows:
            break
        w = torch.tensor([ids[s : s + window]])
        with torch.no_grad():
            lg = model(w).logits[0].double()
        lp = torch.log_softmax(lg[:-1], dim=-1)
        tgt = w[0, 1:]
        total += float(-lp.gather(1, tgt[:, None]).sum())
        count += len(tgt)
        wins += 1
    return total / count, count, wins


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL, help="llama GGUF file")
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--tokens", help="file of whitespace-separated token ids")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--attention", default="", help="nwc attention implementation: standard or gqa (default: the runtime's choice)")
    ap.add_argument("--nll", action="store_true")
    ap.add_argument("--nll-tokens")
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--max-windows", type=int, default=8)
    ap.add_argument("--json", help="write the numbers here")
    ap.add_argument("--tol", type=float, default=1e-3)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    ids = read_ids(args.tokens) if args.tokens else tokenize_text(args.model, args.seq)
    ids = ids[: args.seq]
    log(f"{len(ids)} tokens; first {ids[:12]}")

    t0 = time.time()
    model, cfg = load_hf_model(args.model, torch)
    log(f"transformers model loaded in {time.time() - t0:.1f}s ({cfg.num_hidden_layers} layers, vocab {cfg.vocab_size})")
    with torch.no_grad():
        hf = model(torch.tensor([ids])).logits[0].float().numpy()

    with tempfile.TemporaryDirectory() as td:
        ids_path = os.path.join(td, "ids.txt")
        with open(ids_path, "w") as f:
            f.write(" ".join(map(str, ids)))
        npy = os.path.join(td, "logits.npy")
        llamadump(args, ids_path, ["-out", npy])
        ours = np.load(npy)
    if ours.shape != hf.shape:
        raise SystemExit(f"shape mismatch: nwc {ours.shape} vs transformers {hf.shape}")
    diff = np.abs(ours.astype(np.float64) - hf.astype(np.float64))
    maxdiff, maxlogit = float(diff.max()), float(np.abs(hf).max())
    argmax_agree = float((ours.argmax(-1) == hf.argmax(-1)).mean())
    res = {
        "model": args.model,
        "tokens": len(ids),
        "max_abs_diff": maxdiff,
        "max_abs_logit": maxlogit,
        "ratio": maxdiff / maxlogit,
        "mean_abs_diff": float(diff.mean()),
        "argmax_agreement": argmax_agree,
        "attention": args.attention or "default",
        "torch": torch.__version__,
    }
    import transformers

    res["transformers"] = transformers.__version__
    log(f"max|diff| {maxdiff:.3g}  max|logit| {maxlogit:.3g}  ratio {maxdiff / maxlogit:.3g}  mean|diff| {res['mean_abs_diff']:.3g}  argmax agreement {argmax_agree:.4f}")

    if args.nll:
        nids = read_ids(args.nll_tokens) if args.nll_tokens else ids
        win = min(args.window, len(nids))
        t0 = time.time()
        mean, count, wins = hf_nll(model, torch, nids, win, args.max_windows)
        log(f"transformers: mean NLL {mean:.6f} over {count} predictions in {wins} windows ({time.time() - t0:.1f}s)")
        with tempfile.TemporaryDirectory() as td:
            p = os.path.join(td, "ids.txt")
            with open(p, "w") as f:
                f.write(" ".join(map(str, nids)))
            out = llamadump(args, p, ["-nll", "-window", str(win), "-max-windows", str(args.max_windows)])
        ours_nll = float(out.split("mean_nll")[1].split()[0])
        log(f"nwc:          mean NLL {ours_nll:.6f}  (diff {ours_nll - mean:+.2e}; ppl {math.exp(mean):.4f} vs {math.exp(ours_nll):.4f})")
        res.update({"nll_hf": mean, "nll_nwc": ours_nll, "nll_predictions": count, "nll_windows": wins, "nll_window": win})

    print(json.dumps(res, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    ok = maxdiff <= args.tol * maxlogit
    log("PASS" if ok else f"FAIL: max|diff| {maxdiff:.3g} > {args.tol} * {maxlogit:.3g}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
