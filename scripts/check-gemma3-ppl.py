#!/usr/bin/env python3
"""Perplexity of gemma-3-270m on the first K windows of the WikiText-2 test
text: `nwc eval` (Go + ONNX Runtime, float32 on the dequantized GGUF) against
llama.cpp (llama-cpp-python) on the same windows. By default llama.cpp runs
an F32 GGUF of the same weights (made by its own quantize tool) with a float32
KV cache: the two runtimes compute the same model. --llama-weights native runs
the Q4_K_M file itself, where llama.cpp's quantized matmuls also round every
activation to 8 bits (Q8_K) and --llama-kv f16 its default KV cache: that
measures llama.cpp's kernels as much as our runtime.

Protocol (eval/eval.go, the GPTQ convention): the whole text (rows joined by
"\\n\\n") tokenized once without BOS, cut into non-overlapping windows of
--seq-len tokens; each window is run on its own and its positions 0..L-2
predict tokens 1..L-1. The ids come from `nwc tokenize --ids-out` (equal to
llama.cpp's own tokenizer's: scripts/check-gguf-tokenizer.py); llama.cpp is
fed the same ids window by window (a fresh context each), logits_all, and the
NLL is computed here in float64. Pass: perplexities within --tol (0.5 %).

  $NWC_CACHE/llamacpp/venv-0.3.16/bin/python scripts/check-gemma3-ppl.py \\
      [--model gemma3-270m] [--windows 8] [--seq-len 2048] [--threads 2] [--json OUT] [--nwc-json FILE] \\
      [--llama-weights f32|native] [--llama-kv f32|f16]
Needs bin/nwc (make build) and the ONNX Runtime env of the docs.
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


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def f32_gguf(llama_cpp, src, threads):
    """An F32 GGUF of src's weights (every tensor dequantized by llama.cpp's
    own quantize tool, --allow-requantize to F32), made once and cached."""
    dst = os.path.join(CACHE, "llamacpp", os.path.splitext(os.path.basename(src))[0] + ".f32.gguf")
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if os.path.exists(dst):
        return dst
    log(f"llama_model_quantize {os.path.basename(src)} -> F32 ({dst})")
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = llama_cpp.LLAMA_FTYPE_ALL_F32
    p.allow_requantize = True
    p.nthread = threads
    tmp = dst + ".tmp"
    if llama_cpp.llama_model_quantize(src.encode(), tmp.encode(), p) != 0:
        sys.exit(f"llama_model_quantize failed for {src}")
    os.replace(tmp, dst)
    return dst


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--gguf", default=os.path.join(CACHE, "models", "gemma3-270m", "gemma-3-270m-q4_k_m.gguf"))
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tol", type=float, default=0.005)
    ap.add_argument("--nwc", default=os.path.join(ROOT, "bin", "nwc"))
    ap.add_argument("--json", default=None)
    ap.add_argument("--llama-weights", choices=["f32", "native"], default="f32",
                    help="f32: llama.cpp runs an F32 GGUF of the same dequantized weights nwc runs (made once by "
                         "llama_model_quantize, cached in $NWC_CACHE/llamacpp); native: the quantized GGUF itself, with "
                         "llama.cpp's quantized kernels (activations rounded to 8 bits in every matmul)")
    ap.add_argument("--llama-kv", choices=["f32", "f16"], default="f32", help="llama.cpp's KV cache type")
    ap.add_argument("--nwc-json", default=None, help="keep (or reuse) nwc eval's JSON result in this file")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        idf = os.path.join(tmp, "ids.bin")
        subprocess.run([args.nwc, "tokenize", "--model", args.gguf, "--ids-out", idf], check=True,
                       stdout=sys.stderr)
        ids = np.fromfile(idf, dtype="<i4")
        if args.nwc_json and os.path.exists(args.nwc_json):
            log(f"nwc eval: reusing {args.nwc_json}")
            ours = json.load(open(args.nwc_json))
        else:
            log(f"nwc eval --max-windows {args.windows} ...")
            out = subprocess.run([args.nwc, "eval", "--model", args.model, "--max-windows", str(args.windows),
                                  "--seq-len", str(args.seq_len), "--json", "-q", "--threads", str(args.threads)],
                                 check=True, capture_output=True, text=True)
            ours = json.loads(out.stdout)
            if args.nwc_json:
                with open(args.nwc_json, "w") as f:
                    f.write(out.stdout)
        if ours.get("windows") not in (None, args.windows) or ours.get("seq_len") not in (None, args.seq_len):
            sys.exit(f"nwc eval result has windows {ours.get('windows')} seq_len {ours.get('seq_len')}, want {args.windows}, {args.seq_len}")
    L = args.seq_len
    if len(ids) < args.windows * L:
        sys.exit(f"{len(ids)} tokens: fewer than {args.windows} windows of {L}")

    from llama_cpp import Llama
    import llama_cpp
    lgguf = args.gguf
    if args.llama_weights == "f32":
        lgguf = f32_gguf(llama_cpp, args.gguf, args.threads)
    kv = {"f32": 0, "f16": 1}[args.llama_kv]  # GGML_TYPE_F32, GGML_TYPE_F16
    llm = Llama(model_path=lgguf, logits_all=True, n_ctx=L, n_batch=512, n_threads=args.threads,
                type_k=kv, type_v=kv, flash_attn=False, verbose=False)
    nll, n, per = 0.0, 0, []
    for w in range(args.windows):
        win = ids[w * L:(w + 1) * L].tolist()
        llm.reset()
        llm.eval(win)
        # float64 in row chunks: a 262k vocabulary makes a whole window's
        # logits 2 GB in float32, and a float64 copy with temporaries
        # would need several times that.
        tgt_ids = np.asarray(win[1:])
        wn = 0.0
        for r0 in range(0, L - 1, 128):
            r1 = min(r0 + 128, L - 1)
            s = np.asarray(llm.scores[r0:r1], dtype=np.float64)
            m = s.max(axis=1)
            lse = m + np.log(np.exp(s - m[:, None]).sum(axis=1))
            wn += float((lse - s[np.arange(r1 - r0), tgt_ids[r0:r1]]).sum())
        nll += wn
        n += L - 1
        per.append(math.exp(wn / (L - 1)))
        log(f"llama.cpp window {w}: ppl {per[-1]:.4f}")
    ref = math.exp(nll / n)
    rel = abs(ours["perplexity"] - ref) / ref
    res = {"model": args.model, "gguf": os.path.basename(args.gguf), "windows": args.windows, "seq_len": L,
           "tokens_scored": n, "tokens_total": int(len(ids)),
           "llama_cpp_python": llama_cpp.__version__, "llama_weights": args.llama_weights, "llama_kv_cache": args.llama_kv, "ppl_llamacpp": ref, "ppl_llamacpp_per_window": per,
           "ppl_nwc": ours["perplexity"], "nwc_tokens_scored": ours.get("tokens_scored"),
           "relative_difference": rel, "tolerance": args.tol, "pass": rel <= args.tol}
    print(json.dumps(res, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
            f.write("\n")
    if not res["pass"]:
        sys.exit(f"perplexity differs by {rel:.2%} (> {args.tol:.1%})")


if __name__ == "__main__":
    main()
