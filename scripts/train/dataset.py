#!/usr/bin/env python3
"""Build the NWC weight dataset (nwc-method.md, "Training the codec").

Sources (read-only, from $NWC_CACHE/models, cached by `make setup`):
  gemma3-270m  gemma-3-270m-q4_k_m.gguf  (dequantized with gguf.quants.dequantize)
  minilm-l6    model.safetensors         (fp32)
The evaluation model smollm2-135m is NEVER read into the dataset. With
--check-exclusion (default on) its tensors are hashed only to prove that no
dataset tensor equals one of them; the hashes go into the manifest.
--holdout gemma3-270m builds the cross-model counterpart nwc-ds-xg instead:
smollm2-135m (val blocks 7 and 22) + minilm-l6, with gemma3-270m hashed only.

For every linear weight W [m out, n in] of every transformer block:
  1. row scales   s_i = std(W[i, :]) (population std, float64 accumulation)
  2. normalize    Wn = W / s[:, None]
  3. chunk        Wn.T (n x m) cut into 16 consecutive output-channel values of one
                  input column: chunk (j, k) = Wn[16k:16k+16, j]; never crosses a
                  column (m is a multiple of 16 for every tensor here).
  4. rows         the chunks of Wn.T in order (column-major in W), 64 chunks per
                  training row of 1024 values; the < 64 leftover chunks of a tensor
                  are dropped (counted in the manifest).
  5. standardize  one global mean/std over the TRAIN rows: x = (Wn - mean) / std.

Split: by whole tensors. All linears of the held-out layers (gemma3-270m blocks 5
and 13, minilm-l6 layer 2) form the validation set; the rest is training.

Output: $NWC_CACHE/train-data/<name>/{train.npy, val.npy, val_tensor.npy,
train_tensor.npy, stats.npz, manifest.json}; the manifest is also copied to
docs/results/training/manifest-<name>.json (the proof that goes into git).
--tiny: minilm-l6 only (layer 0 train, layer 1 val) for CI (< 10 s; no smollm2 hashing).
"""
import argparse
import json
import os
import struct
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import CHUNK, ROW, log, nwc_cache, repo_root, sha256_bytes, sha256_file, write_json  # noqa: E402

GEMMA_FILE = "gemma3-270m/gemma-3-270m-q4_k_m.gguf"
MINILM_FILE = "minilm-l6/model.safetensors"
SMOLLM_FILE = "smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf"

GEMMA_LINEARS = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"]
MINILM_LINEARS = ["attention.self.query", "attention.self.key", "attention.self.value",
                  "attention.output.dense", "intermediate.dense", "output.dense"]

VAL_LAYERS = {"gemma3-270m": {5, 13}, "minilm-l6": {2}, "smollm2-135m": {7, 22}}

# --holdout: the model kept out of the dataset (hashed only, for the exclusion
# proof). smollm2-135m (default, dataset nwc-ds-v1: the evaluation model of the
# shipped codecs) or gemma3-270m (dataset nwc-ds-xg: the cross-model
# counterpart, trained on smollm2-135m + minilm-l6, that never sees gemma3).
# smollm2's attn_q/attn_k are taken as stored in its GGUF (rows in llama.cpp's
# rotary order), which is what `nwc compress` codes for a GGUF input.
HOLDOUT_FILES = {"smollm2-135m": SMOLLM_FILE, "gemma3-270m": GEMMA_FILE}


# ---------------------------------------------------------------- readers
def read_safetensors_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
    return hdr, 8 + n


def minilm_tensors(path, layers=None):
    """Yield (name, layer, kind, W[out,in] float32) for the BERT block linears."""
    hdr, base = read_safetensors_header(path)
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    nl = 1 + max(int(k.split(".")[2]) for k in hdr if k.startswith("encoder.layer."))
    for layer in range(nl):
        if layers is not None and layer not in layers:
            continue
        for kind in MINILM_LINEARS:
            name = f"encoder.layer.{layer}.{kind}.weight"
            e = hdr[name]
            assert e["dtype"] == "F32", (name, e["dtype"])
            a, b = e["data_offsets"]
            w = np.frombuffer(mm[base + a: base + b].tobytes(), dtype="<f4").reshape(e["shape"])
            yield name, layer, kind, w, "F32"


def gguf_tensors(path, layers=None, kinds=None, all_tensors=False):
    import gguf
    from gguf.quants import dequantize
    r = gguf.GGUFReader(path)
    for t in r.tensors:
        shape = [int(d) for d in reversed(list(t.shape))]  # PyTorch order [out, in]
        if all_tensors:
            layer, kind = None, None
        else:
            p = t.name.split(".")
            if len(p) != 4 or p[0] != "blk" or p[3] != "weight" or p[2] not in kinds:
                continue
            layer, kind = int(p[1]), p[2]
            if layers is not None and layer not in layers:
                continue
        w = np.ascontiguousarray(dequantize(t.data, t.tensor_type), dtype="<f4").reshape(shape)
        yield t.name, layer, kind, w, t.tensor_type.name


# ---------------------------------------------------------------- transform
def normalize_and_chunk(w):
    """Returns (rows [R,1024] float32 of row-normalized values, row_scales [m],
    col_stats [n,2] (L2 norm of the raw column, std of the normalized column),
    chunks_total, chunks_dropped)."""
    m, n = w.shape
    assert m % CHUNK == 0, f"out dim {m} not a multiple of {CHUNK}"
    w64 = w.astype(np.float64)
    s = w64.std(axis=1)
    s[s == 0] = 1.0
    wn = (w64 / s[:, None]).astype(np.float32)
    col = np.stack([np.sqrt((w64 ** 2).sum(axis=0)), wn.astype(np.float64).std(axis=0)], axis=1)
    flat = np.ascontiguousarray(wn.T).reshape(-1)  # column j of W = flat[j*m:(j+1)*m]
    total = flat.size // CHUNK
    r = flat.size // ROW
    rows = flat[: r * ROW].reshape(r, ROW)
    return rows, s.astype(np.float32), col.astype(np.float32), total, total - r * (ROW // CHUNK)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", default=None, help="dataset name (default nwc-ds-v1, or nwc-ds-tiny)")
    ap.add_argument("--tiny", action="store_true", help="minilm-l6 layers 0/1 only (CI)")
    ap.add_argument("--out", default=None, help="output dir (default $NWC_CACHE/train-data/<name>)")
    ap.add_argument("--no-check-exclusion", action="store_true",
                    help="skip hashing smollm2-135m tensors for the exclusion proof")
    ap.add_argument("--holdout", default="smollm2-135m", choices=sorted(HOLDOUT_FILES),
                    help="the model kept out (hashed only): smollm2-135m (nwc-ds-v1) or gemma3-270m (nwc-ds-xg)")
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()
    default = "nwc-ds-v1" if args.holdout == "smollm2-135m" else "nwc-ds-xg"
    name = args.name or ("nwc-ds-tiny" if args.tiny else default)
    cache = nwc_cache()
    out = args.out or os.path.join(cache, "train-data", name)
    if os.path.exists(os.path.join(out, "manifest.json")) and not args.force:
        log(f"dataset exists: {out} (--force to rebuild)")
        return
    os.makedirs(out, exist_ok=True)
    t0 = time.time()

    sources = []
    gemma_path = os.path.join(cache, "models", GEMMA_FILE)
    minilm_path = os.path.join(cache, "models", MINILM_FILE)
    smollm_path = os.path.join(cache, "models", SMOLLM_FILE)
    if args.tiny:
        sources.append(("minilm-l6", minilm_path, lambda: minilm_tensors(minilm_path, {0, 1}), {1}))
    elif args.holdout == "smollm2-135m":
        sources.append(("gemma3-270m", gemma_path,
                        lambda: gguf_tensors(gemma_path, None, set(GEMMA_LINEARS)), VAL_LAYERS["gemma3-270m"]))
        sources.append(("minilm-l6", minilm_path, lambda: minilm_tensors(minilm_path), VAL_LAYERS["minilm-l6"]))
    else:
        sources.append(("smollm2-135m", smollm_path,
                        lambda: gguf_tensors(smollm_path, None, set(GEMMA_LINEARS)), VAL_LAYERS["smollm2-135m"]))
        sources.append(("minilm-l6", minilm_path, lambda: minilm_tensors(minilm_path), VAL_LAYERS["minilm-l6"]))

    tensors, rows_by_split, tid_by_split, stats = [], {"train": [], "val": []}, {"train": [], "val": []}, {}
    src_meta = []
    for model, path, it, val_layers in sources:
        log(f"{model}: hashing {path}")
        fsha = sha256_file(path)
        src_meta.append({"model": model, "file": os.path.relpath(path, cache), "sha256": fsha,
                         "bytes": os.path.getsize(path)})
        for tname, layer, kind, w, dtype in it():
            split = "val" if layer in val_layers else "train"
            rows, s, col, total, dropped = normalize_and_chunk(w)
            tid = len(tensors)
            tensors.append({
                "id": tid, "model": model, "name": tname, "layer": layer, "kind": kind,
                "source_file": os.path.relpath(path, cache), "source_sha256": fsha,
                "stored_dtype": dtype, "shape": list(w.shape),
                "f32_sha256": sha256_bytes(np.ascontiguousarray(w, dtype="<f4").tobytes()),
                "split": split, "rows": int(rows.shape[0]), "chunks": int(total),
                "chunks_dropped": int(dropped),
            })
            rows_by_split[split].append(rows)
            tid_by_split[split].append(np.full(rows.shape[0], tid, dtype=np.int16))
            stats[f"{tid}.row_scales"] = s
            stats[f"{tid}.col_stats"] = col
        log(f"{model}: {sum(1 for t in tensors if t['model'] == model)} tensors")

    train = np.concatenate(rows_by_split["train"])
    val = np.concatenate(rows_by_split["val"])
    mean = float(train.astype(np.float64).mean())
    std = float(np.sqrt(((train.astype(np.float64) - mean) ** 2).mean()))
    train = ((train - np.float32(mean)) / np.float32(std)).astype(np.float32)
    val = ((val - np.float32(mean)) / np.float32(std)).astype(np.float32)
    np.save(os.path.join(out, "train.npy"), train)
    np.save(os.path.join(out, "val.npy"), val)
    np.save(os.path.join(out, "train_tensor.npy"), np.concatenate(tid_by_split["train"]))
    np.save(os.path.join(out, "val_tensor.npy"), np.concatenate(tid_by_split["val"]))
    np.savez(os.path.join(out, "stats.npz"), **stats)

    # exclusion proof: the evaluation model is hashed, never stored or used
    excl = {"model": args.holdout, "file": HOLDOUT_FILES[args.holdout], "used": False}
    sm_path = os.path.join(cache, "models", HOLDOUT_FILES[args.holdout])
    if args.tiny:
        args.no_check_exclusion = True
        excl["note"] = "tiny (CI) dataset: minilm-l6 only; smollm2-135m not hashed"
    if not args.no_check_exclusion and os.path.exists(sm_path):
        log(f"{args.holdout}: hashing (exclusion proof only)")
        excl["sha256"] = sha256_file(sm_path)
        sm = []
        for tname, _, _, w, dtype in gguf_tensors(sm_path, all_tensors=True):
            sm.append({"name": tname, "stored_dtype": dtype, "shape": list(w.shape),
                       "f32_sha256": sha256_bytes(np.ascontiguousarray(w, dtype="<f4").tobytes())})
        ds_hashes = {t["f32_sha256"] for t in tensors}
        overlap = [t["name"] for t in sm if t["f32_sha256"] in ds_hashes]
        src_overlap = [s["model"] for s in src_meta if s["sha256"] == excl["sha256"]]
        excl.update({"tensors": sm, "tensor_hash_overlap": overlap, "source_file_overlap": src_overlap})
        if overlap or src_overlap:
            raise SystemExit(f"{args.holdout} tensors found in the dataset: {overlap or src_overlap}")
        log(f"{args.holdout}: {len(sm)} tensors, no overlap with {len(tensors)} dataset tensors")
    elif not args.no_check_exclusion:
        excl["note"] = f"{args.holdout} not present in the cache; exclusion by construction only"

    manifest = {
        "format": "nwc-dataset-v1",
        "name": name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(["scripts/train/dataset.py"] + sys.argv[1:]),
        "chunk": CHUNK, "row": ROW,
        "normalization": "per output row: W / std(W[i,:]) (population std); then global (x-mean)/std over train",
        "chunking": "W^T cut into 16 consecutive output-channel values of one input column; 64 chunks per row",
        "split": {"method": "whole tensors: all linears of held-out layers are validation",
                  "val_layers": {m: sorted(v) for m, _, _, v in sources}},
        "global_mean": mean, "global_std": std,
        "sources": src_meta,
        "counts": {"train_rows": int(train.shape[0]), "val_rows": int(val.shape[0]),
                   "train_weights": int(train.size), "val_weights": int(val.size),
                   "tensors": len(tensors)},
        "tensors": tensors,
        "excluded": excl,
    }
    write_json(os.path.join(out, "manifest.json"), manifest)
    if not args.tiny:  # the CI dataset's manifest stays in the cache
        docs = os.path.join(repo_root(), "docs", "results", "training")
        os.makedirs(docs, exist_ok=True)
        dpath = os.path.join(docs, f"manifest-{name}.json")
        strip = lambda m: {k: v for k, v in m.items() if k not in ("created", "command")}  # noqa: E731
        if os.path.exists(dpath) and strip(json.load(open(dpath))) == strip(json.loads(json.dumps(manifest))):
            log(f"{dpath}: unchanged (kept, so cards' manifest_sha256 stay valid)")
        else:
            write_json(dpath, manifest)
    log(f"done in {time.time() - t0:.1f}s: train {train.shape} val {val.shape} mean {mean:.5f} std {std:.5f} -> {out}")


if __name__ == "__main__":
    main()
