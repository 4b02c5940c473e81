#!/usr/bin/env python3
"""Independent reference reader for GGUF tensors (cross-check of nwc's Go reader).

Uses the PyPI `gguf` package (llama.cpp's own Python library): GGUFReader to
parse the file and gguf.quants.dequantize to convert tensors to float32. For
each selected tensor it reports the name, ggml type, shape (row-major, slowest
dimension first, i.e. GGUF's ne[] reversed: the order nwc's tensor.Info uses),
the sha256 of the dequantized values as little-endian float32 bytes, and the
first values.

Usage:
  gguf_reference.py MODEL.gguf [-t NAME]... [--all] [--list] [--json OUT] [--raw-dir DIR]

Without -t/--all it lists tensors (name, type, shape) only. --json writes one
JSON object per tensor (JSON lines) to OUT ('-' for stdout); --raw-dir also
writes each tensor's float32 bytes to DIR/NAME.f32.
"""
import argparse
import hashlib
import json
import os
import sys

import numpy as np
import gguf
from gguf.quants import dequantize


def tensor_record(t, first):
    shape = [int(d) for d in reversed(list(t.shape))]
    vals = dequantize(t.data, t.tensor_type)
    vals = np.ascontiguousarray(vals, dtype="<f4").reshape(-1)
    n = 1
    for d in shape:
        n *= d
    if vals.size != n:
        raise SystemExit(f"{t.name}: dequantized {vals.size} values, shape {shape} needs {n}")
    raw = vals.tobytes()
    return {
        "name": t.name,
        "type": t.tensor_type.name,
        "shape": shape,
        "sha256": hashlib.sha256(raw).hexdigest(),
        "first": [float(x) for x in vals[:first]],
        "first_bits": [int(x) for x in vals[:first].view("<u4")],
    }, raw


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("-t", "--tensor", action="append", default=[], help="tensor name (repeatable)")
    ap.add_argument("--all", action="store_true", help="all tensors")
    ap.add_argument("--list", action="store_true", help="list tensors without dequantizing")
    ap.add_argument("--first", type=int, default=8, help="how many leading values to print")
    ap.add_argument("--json", help="write JSON lines here ('-' = stdout)")
    ap.add_argument("--raw-dir", help="write NAME.f32 files here")
    args = ap.parse_args()

    r = gguf.GGUFReader(args.model)
    by_name = {t.name: t for t in r.tensors}

    if args.list or (not args.tensor and not args.all):
        for t in r.tensors:
            shape = [int(d) for d in reversed(list(t.shape))]
            print(f"{t.name}\t{t.tensor_type.name}\t{shape}")
        return

    names = [t.name for t in r.tensors] if args.all else args.tensor
    out = None
    if args.json:
        out = sys.stdout if args.json == "-" else open(args.json, "w")
    for name in names:
        t = by_name.get(name)
        if t is None:
            raise SystemExit(f"{args.model}: no tensor {name!r}")
        rec, raw = tensor_record(t, args.first)
        if out is not None:
            out.write(json.dumps(rec) + "\n")
        if out is not sys.stdout:
            print(f"{rec['name']}\t{rec['type']}\t{rec['shape']}\t{rec['sha256']}\t{rec['first']}")
        if args.raw_dir:
            os.makedirs(args.raw_dir, exist_ok=True)
            with open(os.path.join(args.raw_dir, name + ".f32"), "wb") as f:
                f.write(raw)
    if out is not None and out is not sys.stdout:
        out.close()


if __name__ == "__main__":
    main()
