#!/usr/bin/env python3
"""Tokenize a text with independent tokenizer implementations and print, for
each, the number of token ids and a sha256 of the id sequence.

The Go test plugin/tokenizer (TestWikiTextMatchesReferences) runs this and
compares the figures with the ids of nwc's own tokenizer (github.com/daulet/
tokenizers on the tokenizer.json that nwc builds from the GGUF metadata).

Implementations (--impl, comma-separated; default all):
  tokenizers         the Python `tokenizers` package on --tokenizer-json (the
                     same file the Go side uses: checks the Go binding).
  llama.cpp          llama.cpp's own tokenizer reading --gguf directly
                     (llama-cpp-python, vocab-only load): an independent check
                     of the GGUF -> tokenizer.json conversion.
  transformers-gguf  Hugging Face transformers' GGUF tokenizer converter on
                     --gguf (informational: transformers has no entry for some
                     llama.cpp pre-tokenizers, e.g. "smollm", and then falls
                     back to the plain GPT-2 split, so it may differ).

Text: by default the file's lines (one trailing newline dropped) joined with
"\\n\\n" (the GPTQ WikiText-2 convention nwc's eval package uses); --raw takes
the file as it is. No special tokens are added (no BOS); special-token
strings in the text are matched as special tokens (the Hugging Face default,
and llama.cpp's parse_special=true).

Output: one JSON object per line on stdout:
  {"impl": ..., "version": ..., "count": N, "sha256": HEX,
   "text_bytes": N, "text_sha256": HEX, "seconds": S}
or {"impl": ..., "error": MESSAGE, "missing": true|false} when the
implementation cannot run (missing: a needed package is not installed).
The id hash is sha256 over the ids as consecutive little-endian uint32.
Exit status 0 unless the arguments are wrong.
"""

import argparse
import hashlib
import json
import os
import struct
import sys
import time


def load_text(path, raw):
    with open(path, "rb") as f:
        data = f.read()
    text = data.decode("utf-8")  # strict: the Go side refuses invalid UTF-8 too
    if raw:
        return text
    if text.endswith("\n"):
        text = text[:-1]
    return "\n\n".join(text.split("\n"))


def ids_digest(ids):
    h = hashlib.sha256()
    for i in range(0, len(ids), 65536):
        chunk = ids[i:i + 65536]
        h.update(struct.pack("<%dI" % len(chunk), *chunk))
    return h.hexdigest()


def run_tokenizers(args, text):
    import tokenizers
    if not args.tokenizer_json:
        raise ValueError("--tokenizer-json is needed")
    tok = tokenizers.Tokenizer.from_file(args.tokenizer_json)
    ids = tok.encode(text, add_special_tokens=False).ids
    return ids, tokenizers.__version__, {}


def run_llama_cpp(args, text):
    import ctypes
    import llama_cpp
    if not args.gguf:
        raise ValueError("--gguf is needed")
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(args.gguf.encode(), params)
    if not model:
        raise RuntimeError("llama.cpp could not load " + args.gguf)
    try:
        vocab = llama_cpp.llama_model_get_vocab(model)
        data = text.encode("utf-8")
        cap = len(data) + 16
        buf = (llama_cpp.llama_token * cap)()
        n = llama_cpp.llama_tokenize(vocab, data, len(data), buf, cap, False, True)
        if n < 0:
            raise RuntimeError("llama_tokenize needs %d tokens" % -n)
        ids = list(buf[:n])
        extra = {
            "n_vocab": llama_cpp.llama_vocab_n_tokens(vocab),
        }
    finally:
        llama_cpp.llama_model_free(model)
    return ids, llama_cpp.__version__, extra


def run_transformers_gguf(args, text):
    import transformers
    if not args.gguf:
        raise ValueError("--gguf is needed")
    extra = {}
    try:
        # The official path; transformers' GGUF reader imports torch.
        import torch  # noqa: F401
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(os.path.dirname(os.path.abspath(args.gguf)),
                                            gguf_file=os.path.basename(args.gguf))
        backend = tok.backend_tokenizer
        extra["path"] = "AutoTokenizer.from_pretrained(gguf_file=...)"
    except ImportError:
        # Without torch: the same converter, fed the metadata read by gguf-py.
        from gguf import GGUFReader
        from transformers.integrations.gguf.gguf_tokenizer_mapping import (
            GGUF_TOKENIZER_MAPPING, convert_gguf_tokenizer)
        reader = GGUFReader(args.gguf)
        fields = reader.fields
        tokenizer_dict = {}
        for key, name in GGUF_TOKENIZER_MAPPING["tokenizer"].items():
            field = fields.get("tokenizer." + key)
            if field is not None:
                tokenizer_dict[name] = field.contents()
        arch = fields["general.architecture"].contents()
        backend, _ = convert_gguf_tokenizer(arch, tokenizer_dict)
        extra["path"] = "convert_gguf_tokenizer on gguf-py metadata (no torch)"
    ids = backend.encode(text, add_special_tokens=False).ids
    return ids, transformers.__version__, extra


IMPLS = {
    "tokenizers": run_tokenizers,
    "llama.cpp": run_llama_cpp,
    "transformers-gguf": run_transformers_gguf,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--text", required=True, help="text file (UTF-8)")
    ap.add_argument("--raw", action="store_true", help="use the file as it is (no \\n\\n join of lines)")
    ap.add_argument("--tokenizer-json", help="tokenizer.json for the tokenizers implementation")
    ap.add_argument("--gguf", help="GGUF model for llama.cpp and transformers-gguf")
    ap.add_argument("--impl", default=",".join(IMPLS), help="comma-separated: " + ", ".join(IMPLS))
    ap.add_argument("--dump-ids", metavar="PREFIX", help="also write PREFIX<impl>.json with the ids")
    args = ap.parse_args()
    impls = [s.strip() for s in args.impl.split(",") if s.strip()]
    for name in impls:
        if name not in IMPLS:
            ap.error("unknown implementation %r" % name)

    text = load_text(args.text, args.raw)
    tdata = text.encode("utf-8")
    common = {"text_bytes": len(tdata), "text_sha256": hashlib.sha256(tdata).hexdigest()}
    for name in impls:
        rec = {"impl": name}
        t0 = time.time()
        try:
            ids, version, extra = IMPLS[name](args, text)
        except ImportError as e:
            rec.update(error="%s: %s" % (type(e).__name__, e), missing=True)
        except Exception as e:  # report and go on with the next one
            rec.update(error="%s: %s" % (type(e).__name__, e), missing=False)
        else:
            rec.update(version=version, count=len(ids), sha256=ids_digest(ids),
                       seconds=round(time.time() - t0, 3), **common, **extra)
            if args.dump_ids:
                with open(args.dump_ids + name + ".json", "w") as f:
                    json.dump(ids, f)
        print(json.dumps(rec), flush=True)
        if "error" in rec:
            print("%s: %s" % (name, rec["error"]), file=sys.stderr)
        else:
            print("%s %s: %d tokens, sha256 %s" % (name, rec["version"], rec["count"], rec["sha256"]),
                  file=sys.stderr)


if __name__ == "__main__":
    main()
