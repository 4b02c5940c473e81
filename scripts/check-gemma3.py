#!/usr/bin/env python3
"""Checks nwc's Gemma-3 runtime (plugin/llama) against llama.cpp on a real GGUF.

Runs gemma-3-270m (Q4_K_M GGUF, dequantized to float32 by nwc) through
plugin/llama/cmd/llamadump (Go + ONNX Runtime, each attention implementation
asked for) and through llama-cpp-python (its own quantized kernels,
logits_all), on the same token ids, and compares:
  - the max relative logit difference, max|diff| / max|logit| over every
    position (the family tests' measure), and at the positions past the
    512-token sliding window;
  - the share of positions whose argmax agrees;
  - the perplexity of the id sequence (next-token NLL over all positions).

Token ids: --ids FILE (whitespace-separated), else the first --n tokens
(default 700, so that the 512 sliding window matters) of the WikiText-2 test
text tokenized by llama.cpp's own tokenizer (BOS 2 first). llama.cpp is not
bit-exact with float32 (it multiplies with the quantized blocks and 8-bit
activations), so expect differences of order 1e-2 of the largest logit, not
1e-6. Pass: perplexities within --ppl-tol (default 0.5 %) and argmax
agreement >= --argmax-min (default 0.95).

--against hf (run with the training venv: torch, transformers, gguf) takes
transformers' Gemma3ForCausalLM instead, in float32, with the GGUF's weights
dequantized by the gguf package (norms minus llama.cpp's +1): the same
float32 computation as nwc, so the pass is max relative diff <= 1e-3. It
needs --ids (write them with --save-ids in a llama.cpp run).

Needs Go, the ONNX Runtime library nwc uses (CGO_LDFLAGS,
ONNXRUNTIME_SHARED_LIBRARY_PATH as in docs), and llama-cpp-python:
  $NWC_CACHE/llamacpp/venv-0.3.16/bin/python scripts/check-gemma3.py \
      [--model PATH.gguf] [--n 700] [--ids ids.txt] [--threads 2] \
      [--attention gqa,standard] [--json OUT] [--save-ids ids.txt]
  $NWC_CACHE/venv-train/bin/python scripts/check-gemma3.py --against hf --ids ids.txt
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get("NWC_CACHE") or os.path.expanduser("~/.cache/nwc")
DEFAULT_MODEL = os.path.join(CACHE, "models", "gemma3-270m", "gemma-3-270m-q4_k_m.gguf")
DEFAULT_TEXT = os.path.join(ROOT, "eval", "testdata", "wikitext-2-raw-test.txt")
WINDOW = 512  # gemma-3-270m's sliding window


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def ppl(logits, ids):
    """Perplexity of ids[1:] under logits[:-1] (float64 log-softmax)."""
    nll = 0.0
    for i in range(len(ids) - 1):
        row = logits[i].astype(np.float64)
        m = row.max()
        nll += m + math.log(np.exp(row - m).sum()) - row[ids[i + 1]]
    return math.exp(nll / (len(ids) - 1))


def compare(got, ref):
    """max|diff|, max|logit|, the same from position WINDOW on, argmax agreement."""
    d = a = dw = aw = 0.0
    agree = 0
    for i in range(ref.shape[0]):
        g, r = got[i], ref[i]
        di, ai = float(np.abs(g - r).max()), float(np.abs(r).max())
        d, a = max(d, di), max(a, ai)
        if i >= WINDOW:
            dw, aw = max(dw, di), max(aw, ai)
        agree += int(np.argmax(g) == np.argmax(r))
    return d, a, dw, aw, agree / ref.shape[0]


def llamacpp_logits(model, ids, threads):
    from llama_cpp import Llama

    # float32 KV cache: llama.cpp's default f16 cache adds its own rounding.
    llm = Llama(model_path=model, logits_all=True, n_ctx=1024, n_threads=threads, n_batch=1024,
                type_k=0, type_v=0, verbose=False)
    llm.eval(ids)
    return llm, np.array(llm.scores[: len(ids)], dtype=np.float32)


# GGUF layer part -> Gemma3ForCausalLM module (llama.cpp's tensor mapping).
HF_PARTS = {
    "attn_norm": "input_layernorm", "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm", "post_ffw_norm": "post_feedforward_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}


def hf_logits(model, ids, threads):
    """transformers' float32 Gemma3ForCausalLM on the GGUF's dequantized weights."""
    import gguf
    import torch
    import transformers

    torch.set_num_threads(threads)
    r = gguf.GGUFReader(model)

    def kv(key):
        return r.fields[key].contents()

    arch = kv("general.architecture")
    if arch != "gemma3":
        sys.exit(f"{model}: architecture {arch}, not gemma3")
    g = lambda k: kv(f"gemma3.{k}")
    sd = {}
    for t in r.tensors:
        w = torch.from_numpy(np.ascontiguousarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32))
        name = t.name.removesuffix(".weight")
        if name.endswith("norm"):
            w = w - 1  # llama.cpp's converter adds Gemma's 1 (Gemma3RMSNorm: 1 + w)
        if name == "token_embd":
            hf = "model.embed_tokens"
        elif name == "output_norm":
            hf = "model.norm"
        else:
            _, layer, part = name.split(".", 2)
            hf = f"model.layers.{layer}.{HF_PARTS[part]}"
        sd[hf + ".weight"] = w  # dequantize gives numpy's [out, in] order
    cfg = transformers.Gemma3TextConfig(
        vocab_size=sd["model.embed_tokens.weight"].shape[0], hidden_size=g("embedding_length"),
        intermediate_size=g("feed_forward_length"), num_hidden_layers=g("block_count"),
        num_attention_heads=g("attention.head_count"), num_key_value_heads=g("attention.head_count_kv"),
        head_dim=g("attention.key_length"), query_pre_attn_scalar=g("attention.key_length"),
        sliding_window=g("attention.sliding_window"), rope_theta=g("rope.freq_base"), rope_local_base_freq=10000.0,
        rms_norm_eps=g("attention.layer_norm_rms_epsilon"), max_position_embeddings=g("context_length"),
        tie_word_embeddings=True, sliding_window_pattern=6)
    cfg._attn_implementation = "eager"
    m = transformers.Gemma3ForCausalLM(cfg).eval()
    missing, unexpected = m.load_state_dict(sd, strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        sys.exit(f"state dict: missing {missing}, unexpected {unexpected}")
    m.tie_weights()
    with torch.no_grad():
        return m(torch.tensor([ids])).logits[0].float().numpy()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--ids", help="whitespace-separated token ids (default: tokenize --text)")
    ap.add_argument("--text", default=DEFAULT_TEXT)
    ap.add_argument("--n", type=int, default=700)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--attention", default="gqa,standard", help="comma-separated nwc attention implementations")
    ap.add_argument("--ppl-tol", type=float, default=0.005)
    ap.add_argument("--argmax-min", type=float, default=0.95)
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--save-ids", help="write the token ids here")
    ap.add_argument("--against", default="llamacpp", choices=["llamacpp", "hf"])
    args = ap.parse_args()

    llm = None
    if args.against == "hf":
        if not args.ids:
            sys.exit("--against hf needs --ids")
        with open(args.ids) as f:
            ids = [int(x) for x in f.read().split()]
        ref = hf_logits(args.model, ids, args.threads)
    elif args.ids:
        with open(args.ids) as f:
            ids = [int(x) for x in f.read().split()]
        llm, ref = llamacpp_logits(args.model, ids, args.threads)
    else:
        from llama_cpp import Llama

        tok = Llama(model_path=args.model, vocab_only=True, verbose=False)
        with open(args.text, encoding="utf-8") as f:
            text = f.read(200_000)
        ids = tok.tokenize(text.encode("utf-8"), add_bos=True, special=False)[: args.n]
        del tok
        llm, ref = llamacpp_logits(args.model, ids, args.threads)
    if len(ids) > 1024:
        sys.exit(f"{len(ids)} ids: at most 1024 (n_ctx)")
    del llm
    if args.save_ids:
        with open(args.save_ids, "w") as f:
            f.write(" ".join(map(str, ids)) + "\n")
    peer = {"llamacpp": "llama.cpp", "hf": "transformers"}[args.against]
    log(f"{peer}: {len(ids)} ids, logits {ref.shape}")
    ref_ppl = ppl(ref, ids)
    res = {"model": os.path.basename(args.model), "against": peer, "tokens": len(ids), "first_ids": ids[:8],
           "reference_ppl": ref_ppl, "nwc": {}}

    exe = os.path.join(tempfile.gettempdir(), "nwc-llamadump-gemma3")
    subprocess.run(["go", "build", "-o", exe, "./plugin/llama/cmd/llamadump"], cwd=ROOT, check=True)
    ok = True
    with tempfile.TemporaryDirectory() as td:
        ids_path = os.path.join(td, "ids.txt")
        with open(ids_path, "w") as f:
            f.write(" ".join(map(str, ids)) + "\n")
        for attn in [a for a in args.attention.split(",") if a]:
            npy = os.path.join(td, f"logits-{attn}.npy")
            cmd = [exe, "-model", args.model, "-tokens", ids_path, "-threads", str(args.threads),
                   "-attention", attn, "-out", npy]
            log(" ".join(cmd))
            subprocess.run(cmd, cwd=ROOT, check=True)
            got = np.load(npy, mmap_mode="r")
            if got.shape != ref.shape:
                sys.exit(f"nwc logits {got.shape}, llama.cpp {ref.shape}")
            d, a, dw, aw, agree = compare(got, ref)
            p = ppl(got, ids)
            rel_ppl = abs(p - ref_ppl) / ref_ppl
            r = {"max_abs_diff": d, "max_abs_logit": a, "max_rel_diff": d / a,
                 "max_rel_diff_past_window": dw / aw if aw else None,
                 "argmax_agreement": agree, "ppl": p, "ppl_rel_diff": rel_ppl}
            res["nwc"][attn] = r
            print(f"{attn}: {len(ids)} tokens: max|diff| {d:.4g} / max|logit| {a:.4g} = {d / a:.3g} "
                  f"(positions >= {WINDOW}: {dw / aw if aw else float('nan'):.3g}); argmax agreement {agree:.4f}; "
                  f"ppl nwc {p:.4f} {peer} {ref_ppl:.4f} (relative diff {rel_ppl:.2e})", flush=True)
            if args.against == "hf":
                ok = ok and d <= 1e-3 * a
            else:
                ok = ok and rel_ppl <= args.ppl_tol and agree >= args.argmax_min
            del got
    res["pass"] = ok
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
