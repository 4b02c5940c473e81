#!/usr/bin/env python3
"""Peer check of `nwc generate` (plugin/llama's KV-cache decoder) against
Hugging Face transformers: greedy generation of 64 tokens, token for token,
on three prompts (two through the model's chat template, one raw completion).

The transformers model is hf_parity.py's: the GGUF dequantized with the
`gguf` package, attn_q/attn_k rows un-permuted, LlamaForCausalLM (eager
attention, float32) from a LlamaConfig made from the metadata. Prompt ids come
from nwc (`nwc generate --json`); the script checks that transformers' own
GGUF tokenizer (apply_chat_template + encode) gives the same ids. Then:

- transformers greedy with its KV cache (model(..., past_key_values=...),
  argmax, end-of-sequence ignored, as `nwc generate --ignore-eos`): must equal
  nwc's 64 tokens;
- transformers `model.generate(do_sample=False, max_new_tokens=64)` (stops at
  eos): must be a prefix of nwc's tokens generated without --ignore-eos.

With --nwc PATH (a .nwc made by `nwc compress --bits 4`, say), it also runs
the same prompts on it (no transformers peer: it shows the text, and where it
first differs from the GGUF's tokens).

Not in `make test` (it needs torch + transformers, and minutes).

    $NWC_CACHE/venv-train/bin/python scripts/check-generate.py [--model smollm2-135m]
        [--gguf PATH.gguf] [--nwc /tmp/s4.nwc] [--tokens 64] [--threads 2] [--out docs/results/generate-smollm2-135m.md]
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_parity  # noqa: E402  (load_hf_model)

ROOT = hf_parity.ROOT
PROMPTS = [
    # (label, prompt, --chat, --system)
    ("chat", "What is the capital of France?", True, ""),
    ("chat + system", "Write a short poem about the sea.", True, "You are a helpful assistant who answers in verse."),
    ("raw completion", "The history of the city begins in the Roman period, when", False, ""),
]


def log(*a):
    print("[check-generate]", *a, file=sys.stderr, flush=True)


def nwc_generate(nwc, model, prompt, chat, system, tokens, threads, ignore_eos):
    cmd = [nwc, "generate", "--model", model, "--prompt", prompt, "--max-tokens", str(tokens),
           "--threads", str(threads), "--json"]
    if chat:
        cmd.append("--chat")
    if system:
        cmd += ["--system", system]
    if ignore_eos:
        cmd.append("--ignore-eos")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--gguf", default=hf_parity.DEFAULT_MODEL)
    ap.add_argument("--nwc", default="")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bin", default=os.path.join(ROOT, "bin", "nwc"))
    ap.add_argument("--out", default="")
    a = ap.parse_args()

    import torch
    import transformers
    from transformers import AutoTokenizer
    torch.set_num_threads(a.threads)
    log("loading the transformers model from", a.gguf)
    model, cfg = hf_parity.load_hf_model(a.gguf, torch)
    tok = AutoTokenizer.from_pretrained(os.path.dirname(a.gguf), gguf_file=os.path.basename(a.gguf))
    # The GGUF's own end-of-sequence id (tokenizer.ggml.eos_token_id, what
    # nwc stops at): transformers' GGUF tokenizer reports another one for
    # SmolLM2 (1, <|im_start|>, where the metadata says 2, <|im_end|>).
    import gguf
    eos = int(gguf.GGUFReader(a.gguf).fields["tokenizer.ggml.eos_token_id"].parts[-1][0])
    log(f"eos: GGUF {eos}, transformers' GGUF tokenizer {tok.eos_token_id}")

    rows, details, ok = [], [], True
    for label, prompt, chat, system in PROMPTS:
        log(label)
        ours = nwc_generate(a.bin, a.model, prompt, chat, system, a.tokens, a.threads, True)
        ours_eos = nwc_generate(a.bin, a.model, prompt, chat, system, a.tokens, a.threads, False)
        ids = ours["prompt_ids"]
        # transformers' tokenizer of the same GGUF.
        if chat:
            msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
            text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        else:
            text = prompt
        hf_ids = tok.encode(text, add_special_tokens=False)
        same_prompt = hf_ids == ids and text == ours["prompt"]

        # Greedy with transformers' KV cache, eos ignored.
        t0 = time.time()
        with torch.no_grad():
            inp = torch.tensor([ids])
            out = model(input_ids=inp, use_cache=True)
            past, hf, margins = out.past_key_values, [], []
            logits = out.logits[0, -1]
            for _ in range(a.tokens):
                top2 = torch.topk(logits, 2)
                margins.append(float(top2.values[0] - top2.values[1]))
                nxt = int(top2.indices[0])
                hf.append(nxt)
                out = model(input_ids=torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
                past, logits = out.past_key_values, out.logits[0, -1]
            gen = model.generate(inp, attention_mask=torch.ones_like(inp), do_sample=False, max_new_tokens=a.tokens, eos_token_id=eos, pad_token_id=eos)
        hf_gen = [int(x) for x in gen[0, len(ids):]]
        if hf_gen and hf_gen[-1] == eos:
            hf_gen = hf_gen[:-1]
        hf_s = time.time() - t0
        n_same = next((i for i, (x, y) in enumerate(zip(ours["token_ids"], hf)) if x != y), min(len(hf), len(ours["token_ids"])))
        match = ours["token_ids"] == hf
        gen_match = ours_eos["token_ids"] == hf_gen
        ok = ok and match and gen_match and same_prompt
        rows.append((label, len(ids), same_prompt, f"{n_same}/{a.tokens}", match, min(margins), len(hf_gen), gen_match,
                     ours["prefill_tokens_per_second"], ours["decode_tokens_per_second"]))
        details.append((label, prompt, system, ours_eos["text"], ours["text"], ours["stop_reason"], ours_eos["stop_reason"]))
        log(f"{label}: prompt ids same {same_prompt}; greedy {n_same}/{a.tokens} same; generate() same {gen_match}; min top-2 margin {min(margins):.3f}; hf {hf_s:.1f}s")

    nwc_rows = []
    if a.nwc:
        for label, prompt, chat, system in PROMPTS:
            log("nwc file:", label)
            g = nwc_generate(a.bin, a.model, prompt, chat, system, a.tokens, a.threads, True)
            n = nwc_generate(a.bin, a.nwc, prompt, chat, system, a.tokens, a.threads, False)
            n_ie = nwc_generate(a.bin, a.nwc, prompt, chat, system, a.tokens, a.threads, True)
            first = next((i for i, (x, y) in enumerate(zip(n_ie["token_ids"], g["token_ids"])) if x != y), min(len(n_ie["token_ids"]), len(g["token_ids"])))
            nwc_rows.append((label, first, n["text"], n["stop_reason"], n_ie["decode_tokens_per_second"]))

    lines = []
    lines.append(f"# Greedy generation: nwc vs Hugging Face transformers ({a.model})\n")
    lines.append("Made by `scripts/check-generate.py`" + (f" --nwc {a.nwc}" if a.nwc else "") + ". nwc: `nwc generate --json` "
                 "(plugin/llama KV-cache decoder, ONNX Runtime, float32, default attention); transformers: "
                 "LlamaForCausalLM from the dequantized GGUF (scripts/hf_parity.py), eager attention, float32, its own KV cache.\n")
    lines.append(f"torch {torch.__version__}, transformers {transformers.__version__}, Python {platform.python_version()}, "
                 f"{a.threads} threads, {time.strftime('%Y-%m-%d')}. The machine was shared (load average 6-8 on 2 cores): tokens/s are pessimistic.\n")
    lines.append(f"## {a.tokens} greedy tokens, end-of-sequence ignored (both sides)\n")
    lines.append("| prompt | prompt tokens | prompt ids = transformers' tokenizer | tokens identical | all identical | smallest top-2 logit margin (transformers) | transformers `generate()` tokens (stops at eos) | nwc (stops at eos) identical | nwc prefill tok/s | nwc decode tok/s |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        lines.append("| {} | {} | {} | {} | {} | {:.3f} | {} | {} | {:.1f} | {:.1f} |".format(*r))
    lines.append(f"\nThe `generate()` column uses the GGUF's end-of-sequence id {eos} (tokenizer.ggml.eos_token_id, what nwc stops at); "
                 f"transformers' GGUF tokenizer reports eos_token_id {tok.eos_token_id} for this file, which would not stop at `<|im_end|>`.\n")
    lines.append("\nResult: " + ("**PASS** (every token identical on every prompt)." if ok else "**FAIL**.") + "\n")
    lines.append("## The texts (nwc, stopping at end-of-sequence)\n")
    for label, prompt, system, text, text_ie, sr_ie, sr in details:
        lines.append(f"**{label}**" + (f" (system: {system!r})" if system else "") + f": {prompt!r} → stop: {sr}\n")
        lines.append("```\n" + text + "\n```\n")
    if nwc_rows:
        lines.append(f"## The same prompts on {os.path.basename(a.nwc)} (no transformers peer)\n")
        lines.append("Greedy, stopping at end-of-sequence. \"first difference\": the index of the first token where the "
                     ".nwc's greedy tokens (eos ignored) differ from the GGUF's (its decoded weights differ from the GGUF's).\n")
        lines.append("| prompt | first difference from the GGUF's tokens | stop | decode tok/s |")
        lines.append("|---|---|---|---|")
        for label, first, text, sr, tps in nwc_rows:
            lines.append(f"| {label} | {first} | {sr} | {tps:.1f} |")
        lines.append("")
        for label, first, text, sr, tps in nwc_rows:
            lines.append(f"**{label}**:\n\n```\n{text}\n```\n")
    md = "\n".join(lines)
    print(md)
    if a.out:
        with open(a.out, "w") as f:
            f.write(md)
        log("wrote", a.out)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
