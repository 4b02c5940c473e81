#!/usr/bin/env python3
"""Tokenize a whole text with llama.cpp's own tokenizer and with nwc's, and
compare: token count, sha256 of the ids, first mismatch position.

  llama.cpp: llama-cpp-python (Llama(model_path, vocab_only=True)) reading the
             GGUF itself: Llama.tokenize(text, add_bos=False, special=True).
  nwc:       `nwc tokenize --model GGUF --text TEXT --ids-out FILE --json`: the
             tokenizer.json nwc builds from the GGUF metadata, run through the
             Hugging Face tokenizers library (plugin/tokenizer).

Both sides tokenize the text in ONE call, as `nwc eval` does (eval/text.go:
the file's rows, one trailing newline dropped, joined with "\\n\\n"; --raw
takes the file as it is), with no BOS/EOS added and special-token strings in
the text matched as special tokens (llama.cpp's parse_special=true, the
Hugging Face default).

Run it with the python of the llama-cpp-python venv, e.g.
  $NWC_CACHE/llamacpp/venv-0.3.16/bin/python scripts/check-gguf-tokenizer.py \\
      --gguf $NWC_CACHE/models/gemma3-270m/gemma-3-270m-q4_k_m.gguf
--golden FILE writes llama.cpp's figures as JSON (the golden file the Go test
plugin/tokenizer TestGGUFTokenizerGolden compares with).
The id digest is sha256 over the ids as consecutive little-endian 32-bit
integers. Exit status 1 when the two differ.
"""

import argparse
import array
import hashlib
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tokenizer_check import ids_digest, load_text  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def llama_cpp_ids(gguf, text):
    import llama_cpp
    model = llama_cpp.Llama(model_path=gguf, vocab_only=True, verbose=False)
    ids = model.tokenize(text.encode("utf-8"), add_bos=False, special=True)
    return list(ids), llama_cpp.__version__


def nwc_ids(nwc, gguf, text_path, raw):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "ids.bin")
        cmd = nwc + ["tokenize", "--model", gguf, "--text", text_path, "--ids-out", out, "--json", "--round-trip"]
        if raw:
            cmd.append("--raw")
        res = subprocess.run(cmd, stdout=subprocess.PIPE, cwd=ROOT, check=True)
        rec = json.loads(res.stdout)
        a = array.array("i")
        with open(out, "rb") as f:
            a.frombytes(f.read())
        if sys.byteorder != "little":
            a.byteswap()
        return a.tolist(), rec


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", required=True, help="GGUF model file")
    ap.add_argument("--text", default=os.path.join(ROOT, "eval", "testdata", "wikitext-2-raw-test.txt"))
    ap.add_argument("--raw", action="store_true", help="the file as it is (no \\n\\n join of rows)")
    ap.add_argument("--nwc", default="go run ./cmd/nwc", help="how to run nwc (default: %(default)s)")
    ap.add_argument("--golden", metavar="FILE", help="write llama.cpp's count and digest here (JSON)")
    args = ap.parse_args()

    text = load_text(args.text, args.raw)
    tsum = hashlib.sha256(text.encode("utf-8")).hexdigest()
    ref, version = llama_cpp_ids(args.gguf, text)
    ours, rec = nwc_ids(args.nwc.split(), args.gguf, args.text, args.raw)
    rsum, osum = ids_digest(ref), ids_digest(ours)
    name = os.path.basename(args.gguf)
    print("text: %s, %d bytes, sha256 %s" % (os.path.basename(args.text), len(text.encode("utf-8")), tsum))
    print("llama.cpp (llama-cpp-python %s) %s: %d tokens, sha256 %s" % (version, name, len(ref), rsum))
    print("nwc (tokenizer.json from %s)      %s: %d tokens, sha256 %s, round trip %s" % (
        rec["tokenizer"], name, len(ours), osum, rec.get("round_trip")))
    if rec["text_sha256"] != tsum:
        print("nwc tokenized another text (sha256 %s)" % rec["text_sha256"])
        return 1
    if rec["count"] != len(ours) or rec["sha256"] != osum:
        print("nwc's printed figures (%d, %s) differ from its ids file" % (rec["count"], rec["sha256"]))
        return 1
    same = ref == ours
    if same:
        print("identical")
    else:
        i = next((k for k, (a, b) in enumerate(zip(ref, ours)) if a != b), min(len(ref), len(ours)))
        print("first mismatch at token %d: llama.cpp %s, nwc %s" % (i, ref[max(0, i - 3):i + 5], ours[max(0, i - 3):i + 5]))
    if args.golden:
        with open(args.golden, "w") as f:
            json.dump({
                "model": name,
                "text": os.path.basename(args.text),
                "text_rows_joined": not args.raw,
                "text_sha256": tsum,
                "reference": "llama.cpp via llama-cpp-python %s: Llama(vocab_only=True).tokenize(text, add_bos=False, special=True)" % version,
                "llama_cpp_python_version": version,
                "count": len(ref),
                "sha256": rsum,
            }, f, indent=1)
            f.write("\n")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
