#!/usr/bin/env python3
"""Table of llama.cpp's quantizers on the reference model (scripts/run-llamacpp-peers.sh).

Reads the files run-llamacpp-peers.sh leaves in --work: NAME.gguf (llama-quantize
outputs), NAME.eval-wK.json (nwc eval --json), NAME.failed (refusals),
ref*.json (reference points) and xcheck-* (the llama-perplexity cross-check),
and writes OUT.md and OUT.json.

Bits/weight are counted as nwc counts its own files: the block linears
(blk.N.*.weight matrices, norms and embeddings excluded, as loader.IsBlockLinear)
from their GGUF bytes (every block scale and min included), and the whole file
(file bytes x 8 / every weight of the model).
"""
import argparse
import collections
import json
import os
import re
import sys

import gguf

BLOCK = re.compile(r"^blk\.\d+\.")
ROLES = ["token_embd", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down", "output"]


def is_block_linear(t):
    n = t.name
    return (len(t.shape) == 2 and n.endswith(".weight") and BLOCK.match(n)
            and "norm" not in n.lower() and "embed" not in n.lower())


def role(name):
    if name in ("token_embd.weight", "output.weight"):
        return name[:-len(".weight")]
    m = re.match(r"^blk\.\d+\.(\w+)\.weight$", name)
    return m.group(1) if m else None


def gguf_stats(path):
    r = gguf.GGUFReader(path)
    lin_bytes = lin_n = all_n = 0
    types = collections.defaultdict(collections.Counter)
    for t in r.tensors:
        all_n += int(t.n_elements)
        if is_block_linear(t):
            lin_bytes += int(t.n_bytes)
            lin_n += int(t.n_elements)
        ro = role(t.name)
        if ro in ROLES:
            types[ro][t.tensor_type.name] += 1
    size = os.path.getsize(path)
    return {
        "file_bytes": size,
        "weights": all_n,
        "linear_weights": lin_n,
        "linear_bytes": lin_bytes,
        "linear_bits_per_weight": 8 * lin_bytes / lin_n,
        "file_bits_per_weight": 8 * size / all_n,
        "tensor_types": {k: dict(v) for k, v in types.items()},
    }


def types_text(tt):
    parts = []
    for ro in ROLES:
        if ro not in tt:
            continue
        c = tt[ro]
        parts.append(ro + " " + "/".join(f"{k}" + (f"x{n}" if len(c) > 1 else "") for k, n in sorted(c.items(), key=lambda kv: -kv[1])))
    return ", ".join(parts)


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def parse_llama_ppl(path):
    """Final estimate (default mode) or the last [i]ppl (strided mode), and the token count."""
    if not os.path.exists(path):
        return None
    txt = open(path, errors="replace").read()
    out = {}
    m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", txt)
    if m:
        out["perplexity"], out["stderr"] = float(m.group(1)), float(m.group(2))
    else:
        v = re.findall(r"\[(\d+)\]([0-9.]+),", txt)
        if v:
            out["perplexity"] = float(v[-1][1])
    m = re.search(r"have (\d+) tokens", txt)
    if m:
        out["text_tokens"] = int(m.group(1))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True)
    ap.add_argument("--windows", type=int, required=True)
    ap.add_argument("--calib-chunks", type=int, required=True)
    ap.add_argument("--types", required=True)
    ap.add_argument("--xcheck", default="Q4_K_M", help="the file of the llama-perplexity cross-check")
    ap.add_argument("--reference", required=True, help="the reference Q4_1 GGUF")
    ap.add_argument("--out", required=True, help="output path without suffix")
    a = ap.parse_args()
    W = a.windows
    rows = []
    for t in a.types.split():
        for variant in ("plain", "imatrix"):
            name = t if variant == "plain" else t + "-imatrix"
            row = {"type": t, "imatrix": variant == "imatrix", "name": name}
            q = os.path.join(a.work, name + ".gguf")
            failed = os.path.join(a.work, name + ".failed")
            if os.path.exists(failed):
                row["refused"] = " ".join(open(failed).read().split())
            if os.path.exists(q):
                row.update(gguf_stats(q))
                ev = load_json(os.path.join(a.work, f"{name}.eval-w{W}.json"))
                if ev:
                    row.update({"perplexity": ev["perplexity"], "mean_kl": ev.get("mean_kl"),
                                "top1_agreement": ev.get("top1_agreement"), "tokens_scored": ev["tokens_scored"],
                                "windows": ev["windows"]})
            if "refused" in row or "file_bytes" in row:
                rows.append(row)
    ref = gguf_stats(a.reference)
    ref_eval = load_json(os.path.join(a.work, f"reference.eval-w{W}.json"))
    lossless = load_json(os.path.join(a.work, "ref-lossless.inspect.json"))
    refpts = [{"name": "reference Q4_1 GGUF as it is", "linear_bits_per_weight": ref["linear_bits_per_weight"],
               "file_bits_per_weight": ref["file_bits_per_weight"], "mean_kl": 0.0,
               "perplexity": ref_eval["perplexity"] if ref_eval else None, "tensor_types": ref["tensor_types"]}]
    if lossless:
        lb = ln = 0
        codecs = collections.Counter()
        for t in lossless["tensors"]:
            if len(t["shape"]) == 2 and BLOCK.match(t["name"]) and t["name"].endswith(".weight") and "norm" not in t["name"]:
                lb += t["bytes"]
                ln += t["elements"]
                codecs[t["codec"]] += 1
        refpts.append({"name": "reference, nwc compress --codec lossless (block-split)",
                       "linear_bits_per_weight": 8 * lb / ln, "file_bits_per_weight": lossless["file_bits_per_weight"],
                       "mean_kl": 0.0, "perplexity": ref_eval["perplexity"] if ref_eval else None,
                       "linear_codecs": dict(codecs)})
    xc = {
        "file": a.xcheck + ".gguf",
        "llama_perplexity_second_halves": parse_llama_ppl(os.path.join(a.work, "xcheck-llama-half.log")),
        "nwc_eval_score_from_1024": load_json(os.path.join(a.work, "xcheck-nwc-half.json")),
        "llama_perplexity_window0_strided": parse_llama_ppl(os.path.join(a.work, "xcheck-llama-full1-c1025.log")),
        "nwc_eval_window0": load_json(os.path.join(a.work, "xcheck-nwc-full1.json")),
    }
    for k in ("nwc_eval_score_from_1024", "nwc_eval_window0"):
        if xc[k]:
            xc[k] = {f: xc[k].get(f) for f in ("perplexity", "tokens_scored", "windows", "score_from", "text_tokens")}
    out = {"model": "smollm2-135m", "windows": W, "seq_len": 2048, "calibration_tokens": 2048 * a.calib_chunks,
           "llama_cpp": "llama-cpp-python 0.3.16 sdist (vendor/llama.cpp)", "rows": rows,
           "reference_points": refpts, "cross_check": xc}
    with open(a.out + ".json", "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")

    L = []
    L.append("# smollm2-135m: llama.cpp's quantizers in our harness\n")
    L.append(f"llama.cpp from the llama-cpp-python 0.3.16 sdist (`make setup-llamacpp`); input: the reference "
             f"(Q4_1 GGUF) written as an F32 GGUF by `nwc decompress --format gguf --dtype f32`. "
             f"`llama-imatrix` on {2048 * a.calib_chunks} tokens ({a.calib_chunks} windows of 2048) of "
             f"eval/testdata/calibration-gutenberg.txt. Every file evaluated by `nwc eval` against the reference: "
             f"WikiText-2 test, GPTQ convention, {W} windows of 2048 tokens"
             + (f" ({rows[0].get('tokens_scored', W * 2047)} predictions)" if rows else "") + ".\n")
    L.append("Regenerate: `scripts/run-llamacpp-peers.sh` (cached under $NWC_CACHE/llamacpp/peers).\n")
    L.append("Bits/weight as nwc counts them: block linears (blk.N attention and MLP matrices) from their GGUF block "
             "bytes, every scale/min included; whole file = file bytes x 8 / all 134.5 M weights (the Q8_0/Q6_K/... "
             "token embedding, which is also the output head, weighs a lot at this size).\n")
    L.append("| type | imatrix | bits/weight (block linears) | bits/weight (whole file) | perplexity | mean KL (nats) | top-1 agree | tensor types |")
    L.append("|---|---|---|---|---|---|---|---|")
    for rp in refpts:
        ppl = f"{rp['perplexity']:.4f}" if rp.get("perplexity") else "-"
        L.append(f"| {rp['name']} | - | {rp['linear_bits_per_weight']:.3f} | {rp['file_bits_per_weight']:.3f} | {ppl} | 0 | 1 | "
                 + (types_text(rp["tensor_types"]) if "tensor_types" in rp else "codes rANS-coded, fp16 fields float-split") + " |")
    for r in sorted(rows, key=lambda r: (r.get("linear_bits_per_weight", 99), r["name"])):
        im = "yes" if r["imatrix"] else "no"
        if "file_bytes" not in r:
            L.append(f"| {r['type']} | {im} | - | - | - | - | - | refused: {r.get('refused', '')[:120]} |")
            continue
        ppl = f"{r['perplexity']:.4f}" if "perplexity" in r else "-"
        kl = f"{r['mean_kl']:.5f}" if r.get("mean_kl") is not None else "-"
        ag = f"{r['top1_agreement']:.4f}" if r.get("top1_agreement") is not None else "-"
        L.append(f"| {r['type']} | {im} | {r['linear_bits_per_weight']:.3f} | {r['file_bits_per_weight']:.3f} | {ppl} | {kl} | {ag} | {types_text(r['tensor_types'])} |")
    L.append("")
    L.append("Notes")
    L.append("- d = 576 is not a multiple of 256: every k-quant tensor whose rows have 576 entries falls back "
             "(llama-quant.cpp: Q2_K/Q3_K/IQ4_XS -> IQ4_NL, Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0); only ffn_down "
             "(rows of 1536 = 6 x 256) keeps k-quant types. The tensor-types column lists what each file holds "
             "(xN: tensors of that role with that type).")
    L.append("- llama.cpp quantizes the tied token embedding / output head (token_embd) by its own rules (Q8_0 or Q6_K-like "
             "types for most files); nwc's codecs leave the reference's Q8_0 embedding as it is. The block-linear "
             "column is the comparable one.")
    L.append("- The importance matrix is llama-imatrix's plain sum of squared activations; nwc's own calibration weights "
             "the first token of each window x128 (docs/CALIBRATION.md) and spreads its windows over the whole text, "
             "llama-imatrix reads the first chunks.")
    L.append("")
    L.append("## Cross-check: nwc eval vs llama-perplexity on the same file")
    L.append("")
    h, nh = xc["llama_perplexity_second_halves"], xc["nwc_eval_score_from_1024"]
    f1, nf1 = xc["llama_perplexity_window0_strided"], xc["nwc_eval_window0"]
    L.append(f"File: {a.xcheck}. Text: the WikiText-2 test rows joined with \"\\n\\n\" "
             "(what nwc eval tokenizes), given to llama-perplexity as a file; no BOS (the model's add_bos_token "
             "is false, so llama.cpp adds none either).\n")
    L.append("llama-perplexity `-c 2048 -b 2048 --chunks N` cuts the same non-overlapping 2048-token windows but "
             "scores only the second half of each (predictions from positions 1024..2046, 1023 per window). "
             "`nwc eval --score-from 1024` scores exactly those predictions. Its strided mode "
             "(`-c 1025 --ppl-stride 2047 --chunks 1`: that mode widens the context to c + stride/2 = 2048) scores every "
             "prediction of the first window, as `nwc eval --max-windows 1` does.\n")
    L.append("| protocol | llama-perplexity | nwc eval | predictions |")
    L.append("|---|---|---|---|")
    if h and nh:
        L.append(f"| {W} windows, second halves | {h.get('perplexity', float('nan')):.4f} ± {h.get('stderr', 0):.4f} | {nh['perplexity']:.4f} | {nh['tokens_scored']} |")
    if f1 and nf1:
        L.append(f"| window 0, every prediction | {f1.get('perplexity', float('nan')):.4f} | {nf1['perplexity']:.4f} | {nf1['tokens_scored']} |")
    if f1 and nf1 and "text_tokens" in f1:
        L.append(f"\nTokens of the whole text: llama.cpp {f1['text_tokens']}, nwc {nf1['text_tokens']}.")
    L.append("")
    with open(a.out + ".md", "w") as f:
        f.write("\n".join(L))
    print("\n".join(L))


if __name__ == "__main__":
    sys.exit(main())
