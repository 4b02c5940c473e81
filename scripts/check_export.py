#!/usr/bin/env python3
"""Peer checks of `nwc decompress --format gguf|safetensors` (driven by scripts/check-export.sh).

Parts (each run in the virtual environment that has what it needs):

  ids       --hf DIR --work W [--windows 4 --seq-len 2048]
            token ids of the fixed prompt (W/prompt_ids.txt) and of the first
            windows of the WikiText-2 test text the project carries
            (W/wiki_ids.txt), with the exported tokenizer.json and nwc eval's
            convention (rows joined with "\\n\\n", no special tokens).
  llamacpp  --gguf F.gguf[,G.gguf...] --work W
            llama.cpp (llama-cpp-python) loads each GGUF: logits of the prompt
            (W/llamacpp-<name>.npy) and, for the first file, the perplexity of
            the WikiText windows (W/llamacpp.json).
  hf        --hf DIR --work W
            transformers' from_pretrained loads the folder: logits of the
            prompt (W/hf.npy), and W/hf.json.
  q8        --gguf F32.gguf,Q8_0.gguf --work W
            our Q8_0 blocks against gguf-py's quantizer (W/q8.json).
  report    --work W --out FILE.md
            compares everything with our runtime (W/ours.npy from llamadump,
            W/eval.json from nwc eval, W/ours_nll.txt from llamadump -nll) and
            writes a Markdown table; exits 1 when a check fails.

Relative difference of logits: max|ours - peer| / max|ours| over the whole
[tokens, vocab] array (the measure of scripts/hf_parity.py).
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WIKI = os.path.join(ROOT, "eval", "testdata", "wikitext-2-raw-test.txt")

PROMPT = (
    "The history of the city begins in the Roman period, when a small settlement grew up on the "
    "north bank of the river at a place where it could be crossed on foot at low tide. Over the "
    "following centuries the town became an important centre of trade: merchants brought wool, "
    "wine and salt, and the market square was rebuilt in stone after a fire destroyed most of the "
    "wooden houses in 1135."
)

LOGITS_TOL = 1e-3
PPL_TOL = 0.005


def read_ids(path):
    with open(path) as f:
        return [int(x) for x in f.read().split()]


def write_ids(path, ids):
    with open(path, "w") as f:
        f.write(" ".join(str(i) for i in ids) + "\n")


def join_rows(data):
    # eval.JoinRows: drop one trailing newline, split at "\n", join with "\n\n".
    if data.endswith("\n"):
        data = data[:-1]
    if data == "":
        return ""
    return "\n\n".join(data.split("\n"))


def part_ids(a):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(a.hf, "tokenizer.json"))
    prompt = tok.encode(PROMPT, add_special_tokens=False).ids
    write_ids(os.path.join(a.work, "prompt_ids.txt"), prompt)
    with open(WIKI, encoding="utf-8") as f:
        text = join_rows(f.read())
    ids = tok.encode(text, add_special_tokens=False).ids
    n = a.windows * a.seq_len
    if len(ids) < n:
        sys.exit(f"WikiText-2 gives {len(ids)} tokens, fewer than {n}")
    write_ids(os.path.join(a.work, "wiki_ids.txt"), ids[:n])
    json.dump({"prompt_tokens": len(prompt), "wiki_tokens_total": len(ids), "windows": a.windows, "seq_len": a.seq_len},
              open(os.path.join(a.work, "ids.json"), "w"))
    print(f"ids: prompt {len(prompt)} tokens; WikiText-2 {len(ids)} tokens, first {n} kept")


def nll_of(logits, ids):
    """Mean next-token NLL of one window (float64 log-softmax), as eval does."""
    x = logits[:-1].astype(np.float64)
    mx = x.max(axis=1, keepdims=True)
    lse = mx[:, 0] + np.log(np.exp(x - mx).sum(axis=1))
    tgt = x[np.arange(len(ids) - 1), ids[1:]]
    return float((lse - tgt).mean())


def part_llamacpp(a):
    import llama_cpp
    from llama_cpp import Llama

    prompt = read_ids(os.path.join(a.work, "prompt_ids.txt"))
    wiki = read_ids(os.path.join(a.work, "wiki_ids.txt"))
    info = json.load(open(os.path.join(a.work, "ids.json")))
    seq = info["seq_len"]
    res = {"llama_cpp_python": llama_cpp.__version__, "files": {}}
    for k, path in enumerate(a.gguf.split(",")):
        name = os.path.splitext(os.path.basename(path))[0]
        t0 = time.time()
        # F32 KV cache (type_k/type_v 0 = GGML_TYPE_F32): no f16 rounding of keys/values.
        llm = Llama(model_path=path, n_ctx=seq, n_batch=seq, n_ubatch=512, logits_all=True, n_threads=a.threads,
                    type_k=0, type_v=0, verbose=False, seed=0)
        load_s = time.time() - t0
        llm.reset()
        llm.eval(prompt)
        logits = np.array(llm.scores[: len(prompt)], dtype=np.float32)
        np.save(os.path.join(a.work, f"llamacpp-{name}.npy"), logits)
        r = {"path": path, "load_s": round(load_s, 2), "n_vocab": llm.n_vocab(),
             "tokenizer_ids_match": llm.tokenize(PROMPT.encode(), add_bos=False, special=False) == prompt}
        if k == 0:
            nlls = []
            t1 = time.time()
            for w in range(info["windows"]):
                ids = wiki[w * seq:(w + 1) * seq]
                llm.reset()
                llm.eval(ids)
                lg = np.array(llm.scores[:seq], dtype=np.float32)
                nlls.append(nll_of(lg, np.array(ids)))
                print(f"llama.cpp: window {w}: nll {nlls[-1]:.5f}", file=sys.stderr)
            r["window_nll"] = nlls
            r["mean_nll"] = float(np.mean(nlls))
            r["ppl"] = math.exp(r["mean_nll"])
            r["ppl_s"] = round(time.time() - t1, 1)
        res["files"][name] = r
        del llm
        print(f"llama.cpp: {name}: loaded in {load_s:.1f}s" + (f", ppl {r['ppl']:.4f}" if "ppl" in r else ""))
    json.dump(res, open(os.path.join(a.work, "llamacpp.json"), "w"), indent=1)


def part_hf(a):
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(a.threads)
    prompt = read_ids(os.path.join(a.work, "prompt_ids.txt"))
    t0 = time.time()
    model = AutoModelForCausalLM.from_pretrained(a.hf, torch_dtype=torch.float32)
    model.eval()
    tok = AutoTokenizer.from_pretrained(a.hf)
    load_s = time.time() - t0
    with torch.no_grad():
        out = model(torch.tensor([prompt]))
    logits = out.logits[0].float().numpy()
    np.save(os.path.join(a.work, "hf.npy"), logits)
    chat = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    same_ids = tok(PROMPT, add_special_tokens=False)["input_ids"] == prompt
    json.dump({"transformers": transformers.__version__, "torch": torch.__version__, "class": type(model).__name__,
               "load_s": round(load_s, 2), "tokenizer_class": type(tok).__name__, "tokenizer_ids_match": same_ids,
               "chat_template_sample": chat, "bos": tok.bos_token, "eos": tok.eos_token},
              open(os.path.join(a.work, "hf.json"), "w"), indent=1)
    print(f"transformers {transformers.__version__}: {type(model).__name__} loaded in {load_s:.1f}s; tokenizer ids match: {same_ids}")


def part_q8(a):
    """Our Q8_0 blocks vs gguf-py's quants.quantize (a port of ggml's quantize_row_q8_0) on the F32 export."""
    import gguf
    from gguf import quants

    f32, q8 = a.gguf.split(",")
    ref = {t.name: t for t in gguf.GGUFReader(f32).tensors}
    n = same = 0
    for t in gguf.GGUFReader(q8).tensors:
        if t.tensor_type != gguf.GGMLQuantizationType.Q8_0:
            continue
        x = np.array(ref[t.name].data, dtype=np.float32)
        q = quants.quantize(x.reshape(-1, x.shape[-1]), gguf.GGMLQuantizationType.Q8_0)
        n += 1
        same += int(np.array_equal(q.view(np.uint8).ravel(), np.array(t.data).view(np.uint8).ravel()))
    ft = int(gguf.GGUFReader(q8).fields["general.file_type"].contents())
    json.dump({"q8_tensors": n, "q8_identical": same, "file_type": ft}, open(os.path.join(a.work, "q8.json"), "w"))
    print(f"Q8_0: {same}/{n} tensors byte-identical to gguf-py quants.quantize; general.file_type {ft}")


def rel_diff(ours, peer):
    if ours.shape != peer.shape:
        return float("inf"), float("inf")
    d = np.abs(ours.astype(np.float64) - peer.astype(np.float64))
    return float(d.max() / np.abs(ours).max()), float(d.max())


def part_report(a):
    W = a.work
    ours = np.load(os.path.join(W, "ours.npy"))
    ev = json.load(open(os.path.join(W, "eval.json")))
    lc = json.load(open(os.path.join(W, "llamacpp.json")))
    ids = json.load(open(os.path.join(W, "ids.json")))
    hf = json.load(open(os.path.join(W, "hf.json"))) if os.path.exists(os.path.join(W, "hf.json")) else None
    meta = json.load(open(os.path.join(W, "meta.json")))
    ours_nll = None
    if os.path.exists(os.path.join(W, "ours_nll.txt")):
        f = open(os.path.join(W, "ours_nll.txt")).read().split()
        ours_nll = float(f[f.index("ppl") + 1])
    rows, ok = [], True

    def add(check, value, limit, passed):
        nonlocal ok
        ok = ok and passed
        rows.append(f"| {check} | {value} | {limit} | {'pass' if passed else 'FAIL'} |")

    for name, r in lc["files"].items():
        peer = np.load(os.path.join(W, f"llamacpp-{name}.npy"))
        rd, ad = rel_diff(ours, peer)
        arg = float((ours.argmax(1) == peer.argmax(1)).mean()) if ours.shape == peer.shape else 0.0
        if name.endswith("-f32") or name.endswith("-fromhf"):
            add(f"llama.cpp logits, {name}.gguf ({ours.shape[0]} tokens)", f"{rd:.2e} (max abs {ad:.2e}; argmax agree {arg:.3f})", "<= 1e-3", rd <= LOGITS_TOL)
        else:
            rows.append(f"| llama.cpp logits, {name}.gguf (informational) | {rd:.2e} (max abs {ad:.2e}; argmax agree {arg:.3f}) | - | - |")
    for name, r in lc["files"].items():
        add(f"llama.cpp tokenizer on {name}.gguf gives our prompt ids", str(r["tokenizer_ids_match"]), "True", bool(r["tokenizer_ids_match"]))
    f32 = [r for n, r in lc["files"].items() if "ppl" in r][0]
    ppl_ours = ev["perplexity"]
    rel = abs(f32["ppl"] - ppl_ours) / ppl_ours
    add(f"llama.cpp perplexity, {ids['windows']} WikiText-2 windows of {ids['seq_len']}", f"{f32['ppl']:.4f} vs nwc eval {ppl_ours:.4f} ({100*rel:.4f} %)", "<= 0.5 %", rel <= PPL_TOL)
    add("WikiText-2 token count: our tokenizer.json in Python vs nwc eval", f"{ids['wiki_tokens_total']} vs {ev['text_tokens']}", "equal", ids["wiki_tokens_total"] == ev["text_tokens"])
    if ours_nll is not None:
        r2 = abs(ours_nll - ppl_ours) / ppl_ours
        add("same ids through our runtime (llamadump -nll) vs nwc eval", f"{ours_nll:.4f} vs {ppl_ours:.4f} ({100*r2:.4f} %)", "tokenization check, <= 0.01 %", r2 <= 1e-4)
    if hf is not None:
        peer = np.load(os.path.join(W, "hf.npy"))
        rd, ad = rel_diff(ours, peer)
        arg = float((ours.argmax(1) == peer.argmax(1)).mean()) if ours.shape == peer.shape else 0.0
        add(f"transformers logits, HF folder ({hf['class']})", f"{rd:.2e} (max abs {ad:.2e}; argmax agree {arg:.3f})", "<= 1e-3", rd <= LOGITS_TOL)
        add("transformers tokenizer (AutoTokenizer on the folder) gives our ids", str(hf["tokenizer_ids_match"]), "True", bool(hf["tokenizer_ids_match"]))
    if os.path.exists(os.path.join(W, "q8.json")):
        q8 = json.load(open(os.path.join(W, "q8.json")))
        add("Q8_0 export: tensors byte-identical to gguf-py quants.quantize (ggml's rounding)", f"{q8['q8_identical']}/{q8['q8_tensors']} (general.file_type {q8['file_type']})", "all", q8["q8_identical"] == q8["q8_tensors"] > 0)
    if "hf_eval" in meta:
        r3 = abs(meta["hf_eval"] - meta["nwc_eval_1"]) / meta["nwc_eval_1"]
        add("nwc eval on the exported HF folder vs on the .nwc (1 window)", f"{meta['hf_eval']:.4f} vs {meta['nwc_eval_1']:.4f}", "equal within 1e-6", r3 <= 1e-6)
    lines = [
        f"# Export peer check: {meta['model']}",
        "",
        f"`scripts/check-export.sh` on {meta['date']} (commit {meta['commit']}), {meta['host']}.",
        f"Source: `{meta['nwc']}` ({meta['nwc_bytes']} bytes). The .nwc was exported with "
        "`nwc decompress --format gguf --dtype f32|f16|q8_0` and `--format safetensors`, and the Hugging Face "
        "folder back to GGUF (`-fromhf`: names, q/k rows, llama.* keys and the tokenizer converted back); our figures come from "
        "the runtime (plugin/llama through ONNX Runtime, `llamadump`, `nwc eval`) on the .nwc itself.",
        f"Peers: llama-cpp-python {lc['llama_cpp_python']} (llama.cpp built from its sdist, CPU, F32 KV cache)"
        + (f"; transformers {hf['transformers']} with torch {hf['torch']} (float32)." if hf else "."),
        f"Prompt: {ids['prompt_tokens']} tokens (fixed English text). Relative difference = max|ours - peer| / max|ours| over all logits.",
        "",
        "| check | result | limit | |",
        "|---|---|---|---|",
    ] + rows + [
        "",
        f"llama.cpp per-window NLL: {', '.join(f'{x:.5f}' for x in f32['window_nll'])}; "
        f"nwc eval: {ev.get('windows', '?')} windows, {ev.get('tokens_scored', '?')} tokens scored.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        open(a.out, "w").write(text)
    sys.exit(0 if ok else 1)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=["ids", "llamacpp", "hf", "q8", "report"])
    p.add_argument("--work", required=True)
    p.add_argument("--hf")
    p.add_argument("--gguf")
    p.add_argument("--out")
    p.add_argument("--windows", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    {"ids": part_ids, "llamacpp": part_llamacpp, "hf": part_hf, "q8": part_q8, "report": part_report}[a.part](a)


if __name__ == "__main__":
    main()
