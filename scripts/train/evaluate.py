#!/usr/bin/env python3
"""Evaluate a trained codec on the held-out validation tensors, and check an exported
codec folder (ONNX Runtime vs PyTorch, parity.bin).

Library use (export.py): full_eval(model, val, tables) returns, per quality level q
(every validation chunk coded at that q):
  mse            mean squared error in the standardized (unit-variance) domain
  mse_rownorm    same in the row-normalized domain (what the Go side sees)
  est_bpw        entropy model estimate: -log2 p of the rounded latents, continuous density
  table_bpw      ideal code length under the exported integer CDF tables (what an exact
                 rANS coder reaches up to a few bytes per stream), escapes costed as the
                 Go escape scheme spends them
  go_bpw         real bytes of the Go coder (ortcodec/entropy EncodeStreams, K = 4096 chunks
                 per stream, round trip checked) via scripts/train/gobytes (go run)
  rans_bpw       real bytes of the reference Python rANS coder (rans.py) on a subset,
                 round-trip checked; flagged "python-rans", not the Go bitstream
  escapes        count of symbols outside the table range
CLI:
  python scripts/train/evaluate.py models/nwc-w128d2-l300      # ORT parity on parity.bin
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rans  # noqa: E402
from common import CHUNK, log  # noqa: E402

MIX = (0.889, 0.1, 0.01, 0.001)  # share of columns per level (method: top 0.1% / 1% / 10%)

PARITY_MAGIC = b"NWCPAR\x00\x01"
PARITY_HDR = 48


@torch.no_grad()
def run_chunks(model, x, q, bs=65536):
    """x standardized [N,16] tensor, q [N] long -> y, s, y_hat, x_hat, p (numpy)."""
    outs = {k: [] for k in ("y", "s", "x_hat", "p")}
    for i in range(0, x.shape[0], bs):
        xb, qb = x[i:i + bs], q[i:i + bs]
        y = model.encode(xb, qb)
        s, y_hat = model.entropy.quantize(y, qb)
        outs["y"].append(y.numpy())
        outs["s"].append(s.numpy().astype(np.int32))
        outs["x_hat"].append(model.decode(y_hat, qb).numpy())
        outs["p"].append(model.entropy.likelihood(y_hat, qb).numpy())
    return {k: np.concatenate(v) for k, v in outs.items()}


def go_bytes(entropy_json, symfile):
    """Real sizes from the Go coder (scripts/train/gobytes, go run); None if unavailable."""
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    try:
        r = subprocess.run(["go", "run", "scripts/train/gobytes/main.go", os.path.abspath(entropy_json), symfile],
                           cwd=root, capture_output=True, text=True, timeout=1200)
    except (OSError, subprocess.TimeoutExpired) as e:
        log(f"  Go coder not run: {e}")
        return None
    if r.returncode != 0:
        log(f"  Go coder failed: {r.stderr.strip()[-500:]}")
        return None
    return json.loads(r.stdout)


def full_eval(model, val, std, tables, rans_chunks=8192, max_chunks=None, seed=7, entropy_json=None):
    model.eval()
    x = torch.from_numpy(np.ascontiguousarray(val)).reshape(-1, CHUNK)
    if max_chunks and x.shape[0] > max_chunks:
        idx = np.sort(np.random.default_rng(seed).choice(x.shape[0], max_chunks, replace=False))
        x = x[torch.from_numpy(idx)]
    res = {"chunks": int(x.shape[0]), "weights": int(x.numel()), "levels": []}
    hists = []
    symfile = tempfile.NamedTemporaryFile(prefix="nwc-syms-", suffix=".bin", delete=False)
    symfile.write(struct.pack("<I", 4))
    for lv in range(4):
        q = torch.full((x.shape[0],), lv, dtype=torch.long)
        o = run_chunks(model, x, q)
        err = ((o["x_hat"] - x.numpy()) ** 2).astype(np.float64)
        tid, idx, byp = rans.symbol_indices(o["s"], tables, q.numpy())
        esc = byp > 0
        n = x.numel()
        r = {"q": lv, "mse": float(err.mean()), "mse_rownorm": float(err.mean() * std * std),
             "est_bpw": float(-np.log2(o["p"].astype(np.float64)).sum() / n),
             "table_bpw": rans.ideal_bits(tid, idx, byp, tables) / n,
             "escapes": int(esc.sum()),
             "symbol_range": [int(o["s"].min()), int(o["s"].max())]}
        m = min(rans_chunks, idx.shape[0])
        if m:
            sub, tsub = idx[:m], tid[:m]
            words = rans.encode(tsub, sub, tables)
            back = rans.decode(words, tsub, tables)
            assert np.array_equal(back, sub), "python rANS round trip failed"
            r["rans_bpw"] = (2 * len(words) * 8 + float(byp[:m].sum())) / (m * CHUNK)
            r["rans_table_bpw_same_subset"] = rans.ideal_bits(tsub, sub, byp[:m], tables) / (m * CHUNK)
            r["rans_chunks"] = m
        res["levels"].append(r)
        hists.append([np.unique(o["s"][:, c], return_counts=True) for c in range(CHUNK)])
        symfile.write(struct.pack("<II", lv, o["s"].shape[0]))
        symfile.write(np.ascontiguousarray(o["s"], dtype="<i4").tobytes())
        log(f"  q={lv}: mse {r['mse']:.3e}  est {r['est_bpw']:.3f}  table {r['table_bpw']:.3f}  "
            f"rans {r.get('rans_bpw', float('nan')):.3f} bits/weight  escapes {r['escapes']}")
    symfile.close()
    gb = go_bytes(entropy_json, symfile.name) if entropy_json else None
    os.unlink(symfile.name)
    if gb:
        for r, g in zip(res["levels"], gb["levels"]):
            assert r["q"] == g["q"]
            r["go_bytes"] = g["bytes"]
            r["go_bpw"] = 8.0 * g["bytes"] / g["symbols"]
            log(f"  q={r['q']}: Go ortcodec/entropy EncodeStreams: {g['bytes']} bytes = {r['go_bpw']:.4f} bits/weight "
                f"(table estimate {r['table_bpw']:.4f}, ratio {r['go_bpw'] / r['table_bpw']:.5f})")
        res["real_bytes_source"] = "go ortcodec/entropy EncodeStreams (K=4096), scripts/train/gobytes"
    else:
        res["real_bytes_source"] = "python-rans (Go coder not available)"
    if len(tables) == 4 * CHUNK:
        sh = shared_table_bits(hists, tables)
        for lv in range(4):
            res["levels"][lv]["shared_table_bpw"] = sh[lv] / x.numel()
        log("  one shared table per channel instead (mixture of the 4 levels) would cost: " +
            " ".join(f"q={lv} {sh[lv] / x.numel():.3f}" for lv in range(4)) + " bits/weight")
    keys = ["mse", "mse_rownorm", "est_bpw", "table_bpw"] + (["go_bpw"] if gb else [])
    for k in keys:
        res["mixed_" + k] = float(sum(w * lvr[k] for w, lvr in zip(MIX, res["levels"])))
    res["mixed_weights"] = list(MIX)
    return res


def shared_table_bits(hists, tables, d=CHUNK):
    """Code length if one table per channel (the uniform mixture of the 4 per-level pmfs,
    as a single shared density would have to be) coded every level: measures what the
    per-level entropy model (a deviation from the reference) saves."""
    out = []
    for lv, hl in enumerate(hists):
        tot = 0.0
        for c in range(d):
            syms, cnt = hl[c]
            m = np.zeros(len(syms))
            for l2 in range(4):
                t = tables[l2 * d + c]
                cdf = np.asarray(t["cdf"], dtype=np.float64)
                f = (cdf[1:] - cdf[:-1]) / cdf[-1]
                i = syms.astype(np.int64) - t["offset"]
                ok = (i >= 0) & (i < len(f) - 1)
                m[ok] += 0.25 * f[i[ok]]
                m[~ok] += 0.25 * f[-1] * 2.0 ** -32
            tot += float(np.sum(cnt * -np.log2(np.maximum(m, 1e-300))))
        out.append(tot)
    return out


def write_parity(path, x_rownorm, q, y, s, y_hat, x_hat, est_cont_bits, est_table_bits, escapes):
    n = x_rownorm.shape[0]
    with open(path, "wb") as f:
        f.write(PARITY_MAGIC)
        f.write(struct.pack("<IIII", 1, n, CHUNK, 0))
        f.write(struct.pack("<dd", est_cont_bits, est_table_bits))
        f.write(struct.pack("<II", escapes, 0))
        assert f.tell() == PARITY_HDR
        f.write(np.ascontiguousarray(q, dtype="<i4").tobytes())
        for a, dt in ((x_rownorm, "<f4"), (y, "<f4"), (s, "<i4"), (y_hat, "<f4"), (x_hat, "<f4")):
            f.write(np.ascontiguousarray(a, dtype=dt).reshape(-1).tobytes())


def read_parity(path):
    b = open(path, "rb").read()
    assert b[:8] == PARITY_MAGIC, "bad magic"
    ver, n, d, _ = struct.unpack_from("<IIII", b, 8)
    est_c, est_t = struct.unpack_from("<dd", b, 24)
    esc, _ = struct.unpack_from("<II", b, 40)
    off = PARITY_HDR
    q = np.frombuffer(b, "<i4", n, off)
    off += 4 * n
    out = {"n": n, "d": d, "q": q, "est_cont_bits": est_c, "est_table_bits": est_t, "escapes": esc}
    for k, dt in (("x", "<f4"), ("y", "<f4"), ("s", "<i4"), ("y_hat", "<f4"), ("x_hat", "<f4")):
        out[k] = np.frombuffer(b, dt, n * d, off).reshape(n, d)
        off += 4 * n * d
    assert off == len(b), (off, len(b))
    return out


def ort_parity(folder):
    """ONNX Runtime (Python) on parity.bin: relative errors and rounding-boundary counts."""
    import onnxruntime as ort
    P = read_parity(os.path.join(folder, "parity.bin"))
    ent = json.load(open(os.path.join(folder, "entropy.json")))
    med = np.array([c["median_f32_bits"] for c in ent["channels"]], dtype="<u4").view("<f4")
    med = med.reshape(-1, P["d"])[P["q"] % (len(med) // P["d"])] if len(med) != P["d"] else med[None, :]
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    enc = ort.InferenceSession(os.path.join(folder, "encoder.onnx"), so, providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(os.path.join(folder, "decoder.onnx"), so, providers=["CPUExecutionProvider"])
    q = P["q"].astype(np.int64)
    y = enc.run(["y"], {"x": P["x"], "q": q})[0]
    xh = dec.run(["x_hat"], {"y_hat": P["y_hat"], "q": q})[0]

    def rel(a, b):
        return float(np.max(np.abs(a - b)) / max(1e-30, float(np.max(np.abs(b)))))
    s = np.round(y - med).astype(np.int32)
    frac = np.abs((P["y"] - med) - np.floor(P["y"] - med) - 0.5)
    near = frac < 1e-4
    mism = s != P["s"]
    r = {"chunks": P["n"], "encoder_max_rel_err": rel(y, P["y"]), "decoder_max_rel_err": rel(xh, P["x_hat"]),
         "encoder_max_abs_err": float(np.max(np.abs(y - P["y"]))),
         "decoder_max_abs_err": float(np.max(np.abs(xh - P["x_hat"]))),
         "symbol_mismatches": int(mism.sum()), "symbol_mismatches_not_near_boundary": int((mism & ~near).sum()),
         "near_boundary": int(near.sum()), "escapes": P["escapes"],
         "est_cont_bits": P["est_cont_bits"], "est_table_bits": P["est_table_bits"]}
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", help="exported codec folders (models/<name>)")
    args = ap.parse_args()
    bad = 0
    for f in args.folders:
        r = ort_parity(f)
        ok = r["encoder_max_rel_err"] < 1e-5 and r["decoder_max_rel_err"] < 1e-5 and \
            r["symbol_mismatches_not_near_boundary"] == 0
        bad += not ok
        print(f"{os.path.basename(f.rstrip('/'))}: {'OK' if ok else 'FAIL'} {json.dumps(r)}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
