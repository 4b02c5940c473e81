#!/usr/bin/env python3
"""Reference sentence embeddings of all-MiniLM-L6-v2 from sentence-transformers.

Writes plugin/bert/testdata/golden-minilm-l6.json: a fixed set of sentences and
their embeddings (float32 little-endian, base64), as sentence-transformers'
SentenceTransformer(<model folder>).encode computes them on the CPU (batch 32,
normalize as the model's modules.json says). plugin/bert's parity test
(TestGoldenEmbeddings) compares the Go runtime against it: cosine >= 0.9999
for every sentence.

Needs sentence-transformers in a venv with torch and transformers (the
training venv: pip install --no-deps sentence-transformers==5.1.2 scipy
scikit-learn httpx). Usage:

  $NWC_CACHE/venv-train/bin/python scripts/check-embeddings.py \
      [--model $NWC_CACHE/models/minilm-l6] [--out plugin/bert/testdata/golden-minilm-l6.json]

--eval-set N writes instead the N evaluation sentences of eval/embed (the same
rule as embed.Split/Pick, reimplemented here) with their embeddings, to --out
(default $NWC_CACHE/embed-ref-minilm-l6-N.json, not committed: 1.5 MB for
1,000); NWC_EMBED_REF=that file go test -run TestEvalSetParity ./plugin/bert
compares the Go runtime with it.
"""
import argparse
import base64
import json
import os
import sys

SENTENCES = [
    "",
    "Hello world.",
    "The quick brown fox jumps over the lazy dog.",
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.",
    "Robert Boulter is an English film , television and theatre actor .",
    "He had a guest @-@ starring role on the television series The Bill in 2000 .",
    "Neural weight compression stores a model's weights as entropy-coded latents.",
    "ONNX Runtime runs the encoder graph built in Go.",
    "Café, naïve, résumé: ACCENTS and UPPER case are folded by the BERT normalizer.",
    "東京は日本の首都です。",
    "Emoji 🙂 and symbols ©®™ — dashes – and “quotes”.",
    "1234567890 3.14159 2.71828 -42 +7 1e-12",
    "what is the capital of france?",
    "Paris is the capital and most populous city of France.",
    "Tabs\tand\nnewlines\r\nin   the    text.",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "I love programming in Go.",
    "Go is an open source programming language that makes it simple to build secure, scalable systems.",
    "The weather today is sunny with a light breeze.",
    "It is raining cats and dogs outside.",
    "Quantization reduces the number of bits per weight.",
    "A very long sentence: " + " ".join(f"word{i} and more text" for i in range(120)),
    " ".join(["repetition"] * 300),
    "The end.",
]


def eval_sentences(text, n):
    """eval/embed's rule: Split (non-heading lines, cut after . ? ! tokens,
    5..60 tokens, first occurrence) then Pick (index i*len/n)."""
    out, seen = [], set()
    for line in text.split("\n"):
        t = line.strip()
        if not t or t.startswith("="):
            continue
        words = t.split()
        start = 0
        for i, w in enumerate(words):
            if w not in (".", "?", "!") and i != len(words) - 1:
                continue
            s = words[start:i + 1]
            start = i + 1
            if 5 <= len(s) <= 60:
                j = " ".join(s)
                if j not in seen:
                    seen.add(j)
                    out.append(j)
    return [out[i * len(out) // n] for i in range(n)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    cache = os.environ.get("NWC_CACHE", os.path.expanduser("~/.cache/nwc"))
    ap.add_argument("--model", default=os.path.join(cache, "models", "minilm-l6"))
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=None)
    ap.add_argument("--eval-set", type=int, default=0, metavar="N", help="embed eval/embed's N evaluation sentences instead")
    args = ap.parse_args()
    sentences = SENTENCES
    if args.eval_set:
        with open(os.path.join(here, "..", "eval", "testdata", "wikitext-2-raw-test.txt"), encoding="utf-8") as f:
            sentences = eval_sentences(f.read(), args.eval_set)
        if args.out is None:
            args.out = os.path.join(cache, f"embed-ref-minilm-l6-{args.eval_set}.json")
    elif args.out is None:
        args.out = os.path.join(here, "..", "plugin", "bert", "testdata", "golden-minilm-l6.json")

    import numpy as np
    import torch
    import sentence_transformers
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(0)
    m = SentenceTransformer(args.model, device="cpu")
    emb = m.encode(sentences, batch_size=32, convert_to_numpy=True)
    emb = np.ascontiguousarray(emb, dtype="<f4")
    tok = m.tokenizer(sentences, truncation=True, max_length=m.max_seq_length)
    out = {
        "model": "minilm-l6 (sentence-transformers/all-MiniLM-L6-v2, fp32)",
        "made_by": "scripts/check-embeddings.py",
        "sentence_transformers": sentence_transformers.__version__,
        "torch": torch.__version__,
        "max_seq_length": m.max_seq_length,
        "dim": int(emb.shape[1]),
        "sentences": sentences,
        "token_ids": [list(map(int, ids)) for ids in tok["input_ids"]],
        "embeddings_f32le_base64": base64.b64encode(emb.tobytes()).decode(),
    }
    with open(args.out, "w") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    norms = np.linalg.norm(emb, axis=1)
    print(f"wrote {args.out}: {len(sentences)} sentences x {emb.shape[1]}, norms {norms.min():.6f}..{norms.max():.6f}", file=sys.stderr)


if __name__ == "__main__":
    main()
