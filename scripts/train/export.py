#!/usr/bin/env python3
"""Export a trained codec to models/<name>/ (layout: models/README.md).

  encoder.onnx   x f32 [N,16] (row-normalized chunks), q i64 [N] -> y f32 [N,16]
  decoder.onnx   y_hat f32 [N,16], q i64 [N] -> x_hat f32 [N,16] (row-normalized)
  entropy.json   nwc-cdf-v1 integer CDF tables (precision 16), computed once here
  card.json      model card: data, manifest, steps, lambda, architecture, validation
  parity.bin     reference latents for the Go parity test (layout: docs/TRAINING.md)

The global standardization of the dataset ((x - mean) / std) is inside the ONNX graphs.
Validation numbers are measured on the full held-out validation tensors, every chunk
coded at each quality level q = 0..3.

  python scripts/train/export.py --run nwc-w128d2-l300 [--out models/nwc-w128d2-l300]
"""
import argparse
import hashlib
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import evaluate as ev  # noqa: E402
import rans  # noqa: E402
from common import CHUNK, log, nwc_cache, repo_root, sha256_file, write_json  # noqa: E402
from model import RATE_C, ExportDecoder, ExportEncoder, GainExportDecoder, GainExportEncoder, make_codec  # noqa: E402

OPSET = 17


def write_entropy_json(path, ent):
    """entropy.json, compact: one line per channel (the tables are most of the bytes)."""
    head = {k: v for k, v in ent.items() if k != "channels"}
    lines = [json.dumps(c, separators=(",", ":")) for c in ent["channels"]]
    text = json.dumps(head, separators=(", ", ": "))[:-1] + ', "channels": [\n' + ",\n".join(lines) + "\n]}\n"
    assert json.loads(text) == ent
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def load_run(rdir):
    st = torch.load(os.path.join(rdir, "final.pt"), weights_only=False)
    cfg = st["config"]
    m = make_codec(cfg.get("arch", "mlp"), cfg["width"], cfg["depth"], d=cfg["d"], levels=cfg["levels"])
    m.load_state_dict(st["model"])
    m.eval()
    info = json.load(open(os.path.join(rdir, "train.json")))
    return m, st, info


def onnx_export(module, args, path, in_names, out_name):
    dyn = {n: {0: "N"} for n in in_names + [out_name]}
    kw = dict(input_names=in_names, output_names=[out_name], dynamic_axes=dyn, opset_version=OPSET,
              do_constant_folding=True)
    try:
        torch.onnx.export(module, args, path, dynamo=False, **kw)
    except TypeError:  # older torch without the dynamo switch
        torch.onnx.export(module, args, path, **kw)
    import onnx
    mdl = onnx.load(path)
    onnx.checker.check_model(mdl)
    return mdl


def decoder_macs(width, depth, d=CHUNK):
    return d * width + depth * width * width + width * d


ENTROPY_MODEL = "factorized non-parametric (Balle 2018), filters (3,3,3), tail mass 1e-9"


def f32_bits(t):
    """IEEE-754 bit patterns (uint32, row-major) of a float32 tensor/array."""
    return [int(v) for v in np.ascontiguousarray(np.asarray(t, dtype="<f4")).reshape(-1).view("<u4")]


def architecture(model, enc, dec):
    """card.json "architecture": kind "mlp" (encoder/decoder MLPs) or "gain" (no network)."""
    if model.arch == "gain":
        return {
            "kind": "gain", "chunk": CHUNK, "width": 0, "blocks": 0, "quality_levels": model.levels,
            "encoder_params": model.log_gain.numel(), "decoder_params": model.log_gain.numel(),
            "decoder_macs_per_chunk": CHUNK, "decoder_macs_per_weight": 1,
            "entropy_model": ENTROPY_MODEL,
            "gain": {
                "decoder_graph": "x_hat = ((y_hat * Gather(DEC, q)) * STD) + MEAN, float32, in that op order",
                "encoder_graph": "y = ((x - MEAN) / STD) * Gather(ENC, q), float32",
                "layout": "[quality_levels, chunk] row-major: entry q*16 + c; DEC = float32(exp(-G)), "
                          "ENC = float32(exp(G)); STD/MEAN = io.inside_graph_standardization",
                "decoder_f32_bits": f32_bits(dec.dec.numpy()),
                "encoder_f32_bits": f32_bits(enc.enc.numpy()),
            },
        }
    W, D = model.width, model.depth
    return {
        "kind": "mlp", "chunk": CHUNK, "width": W, "blocks": D, "quality_levels": 4,
        "encoder_params": sum(p.numel() for p in model.encoder.parameters()) + model.q_embed.weight.numel(),
        "decoder_params": sum(p.numel() for p in model.decoder.parameters()) + model.q_embed.weight.numel(),
        "decoder_macs_per_chunk": decoder_macs(W, D),
        "decoder_macs_per_weight": decoder_macs(W, D) / CHUNK,
        "entropy_model": ENTROPY_MODEL,
    }


def check_gain_graphs(out, enc, dec):
    """The gain graphs must be exactly the contracted op sequence with the card's constants
    (the Go side decodes them natively and has to match ONNX Runtime bit for bit)."""
    import onnx
    from onnx import numpy_helper
    for fname, ops, const, buf in (("decoder.onnx", ["Gather", "Mul", "Mul", "Add"], "dec", dec.dec),
                                   ("encoder.onnx", ["Sub", "Div", "Gather", "Mul"], "enc", enc.enc)):
        g = onnx.load(os.path.join(out, fname)).graph
        got = [n.op_type for n in g.node]
        assert got == ops, f"{fname}: ops {got}, want {ops}"
        inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
        tables = [a for a in inits.values() if a.shape == (4, CHUNK)]
        assert len(tables) == 1 and tables[0].dtype == np.float32, f"{fname}: gain table {list(inits)}"
        assert np.array_equal(tables[0].view("<u4"), buf.numpy().astype("<f4").view("<u4")), f"{fname}: {const}"
        scal = sorted(float(a) for a in inits.values() if a.shape == () and a.dtype == np.float32)
        assert scal == sorted([float(enc.mean), float(enc.std)]), f"{fname}: MEAN/STD {scal}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="run name under $NWC_CACHE/train-runs, or a run dir")
    ap.add_argument("--out", default=None, help="output folder (default models/<run name>)")
    add_export_args(ap)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rdir = args.run if os.path.isdir(args.run) else os.path.join(nwc_cache(), "train-runs", args.run)
    model, st, info = load_run(rdir)
    name = info["name"]
    out = args.out or os.path.join(repo_root(), "models", name)
    os.makedirs(out, exist_ok=True)
    ds_dir = info["dataset_dir"]
    t0 = time.time()

    # ---- entropy tables (once)
    tables = model.entropy.cdf_tables(precision=16)
    ent = {"format": "nwc-cdf-v1", "precision": 16, "levels": model.levels, "channels": [
        {"median_f32_bits": int(np.array([t["median"]], dtype="<f4").view("<u4")[0]),
         "offset": int(t["offset"]), "cdf": t["cdf"]} for t in tables]}
    write_entropy_json(os.path.join(out, "entropy.json"), ent)
    # the tables exactly as the Go side reads them (medians from the bit patterns)
    med = np.array([c["median_f32_bits"] for c in ent["channels"]], dtype="<u4").view("<f4")
    assert np.array_equal(med, model.entropy.medians().numpy().astype(np.float32))

    # ---- ONNX
    if model.arch == "gain":
        enc, dec = GainExportEncoder(model).eval(), GainExportDecoder(model).eval()
    else:
        enc, dec = ExportEncoder(model).eval(), ExportDecoder(model).eval()
    xs = torch.randn(8, CHUNK)
    qs = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    onnx_export(enc, (xs, qs), os.path.join(out, "encoder.onnx"), ["x", "q"], "y")
    onnx_export(dec, (xs, qs), os.path.join(out, "decoder.onnx"), ["y_hat", "q"], "x_hat")
    if model.arch == "gain":
        check_gain_graphs(out, enc, dec)

    training = {"steps": info["steps"], "batch_rows": info["args"]["batch"],
                "batch_chunks": info["args"]["batch"] * 64, "lambda": info["args"]["lmbda"],
                "rate_c": list(RATE_C), "lr": info["args"]["lr"], "aux_lr": info["args"]["aux_lr"],
                "grad_clip": info["args"]["clip"], "seed": info["args"]["seed"], "threads": info["args"]["threads"],
                "wall_time_s": info["elapsed_s"], "command": info["command"]}
    finish(model, enc, dec, out, name, ds_dir, ent["channels"], args, architecture(model, enc, dec), training, t0=t0)


def add_export_args(ap):
    ap.add_argument("--parity-chunks", type=int, default=2048)
    ap.add_argument("--rans-chunks", type=int, default=2048, help="chunks per q for the python rANS check")
    ap.add_argument("--max-val-chunks", type=int, default=262144,
                    help="random subset of the validation chunks (seed 7; 0 = all 807k)")
    ap.add_argument("--threads", type=int, default=1)


def finish(model, enc, dec, out, name, ds_dir, tables, args, arch, training, extra=None, bpw_note_extra="", t0=None):
    """Validation (full held-out tensors), parity.bin + ONNX Runtime check, card.json.
    model: encode/decode (standardized domain), entropy.quantize/likelihood, in_mean/in_std;
    enc/dec: the exported graphs' functions (row-normalized domain) for parity.bin."""
    t0 = t0 or time.time()
    man = json.load(open(os.path.join(ds_dir, "manifest.json")))
    mean, std = float(model.in_mean), float(model.in_std)
    ent = {"channels": tables}

    # ---- validation (full held-out tensors)
    val = np.load(os.path.join(ds_dir, "val.npy"), mmap_mode="r")
    log(f"{name}: validation {val.shape[0] * val.shape[1]} weights")
    res = ev.full_eval(model, val, std, ent["channels"], rans_chunks=args.rans_chunks,
                       max_chunks=args.max_val_chunks or None, entropy_json=os.path.join(out, "entropy.json"))

    # ---- parity.bin: random validation chunks + the most extreme ones (escapes/outliers)
    vx = np.ascontiguousarray(val).reshape(-1, CHUNK)
    g = np.random.default_rng(2024)
    n_ext = min(48, args.parity_chunks // 8)
    ext = np.argsort(-np.abs(vx).max(1))[:n_ext]
    rnd = g.choice(vx.shape[0], args.parity_chunks - n_ext, replace=False)
    pidx = np.concatenate([rnd, ext])
    xp = torch.from_numpy(vx[pidx].copy())
    qp = torch.from_numpy(np.arange(len(pidx)) % 4).long()
    with torch.no_grad():
        x_rn = xp * model.in_std + model.in_mean      # the ONNX input domain (row-normalized)
        y = enc(x_rn, qp)
        s, y_hat = model.entropy.quantize(y, qp)
        x_hat = dec(y_hat, qp)
        p = model.entropy.likelihood(y_hat, qp)
    s_np = s.numpy().astype(np.int32)
    tid, idx, byp = rans.symbol_indices(s_np, ent["channels"], qp.numpy())
    esc = byp > 0
    est_cont = float(-np.log2(p.numpy().astype(np.float64)).sum())
    est_table = rans.ideal_bits(tid, idx, np.zeros_like(byp), ent["channels"])  # symbols only
    ev.write_parity(os.path.join(out, "parity.bin"), x_rn.numpy(), qp.numpy(), y.numpy(), s_np,
                    y_hat.numpy(), x_hat.numpy(), est_cont, est_table, int(esc.sum()))
    par = ev.ort_parity(out)
    log(f"{name}: ORT parity {json.dumps(par)}")

    # ---- card
    files = {}
    for f in ("encoder.onnx", "decoder.onnx", "entropy.json", "parity.bin"):
        pth = os.path.join(out, f)
        files[f] = {"bytes": os.path.getsize(pth), "sha256": sha256_file(pth)}
    man_rel = f"docs/results/training/manifest-{man['name']}.json"
    man_path = os.path.join(repo_root(), man_rel)
    if not os.path.exists(man_path):  # tiny/CI datasets: the manifest stays in the cache
        man_rel = man_path = os.path.join(ds_dir, "manifest.json")
    card = {
        "format": "nwc-codec-card-v1",
        "name": name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(extra or {}),
        "architecture": arch,
        "io": {
            "encoder_input": "x = W[16k:16k+16, j] / row_std (16 consecutive output rows of input column j; "
                             "row_std = population std of each output row of W)",
            "inside_graph_standardization": {"mean": mean, "std": std,
                                             "mean_f32_bits": int(np.float32(mean).view("<u4")),
                                             "std_f32_bits": int(np.float32(std).view("<u4"))},
            "quantization": "s = round_half_even(y - median_c) in float32; y_hat = float32(s) + median_c",
            "onnx_opset": OPSET,
        },
        "training": {
            "dataset": man["name"], "manifest": man_rel,
            "manifest_sha256": sha256_file(man_path) if os.path.exists(man_path) else None,
            "models": sorted({s["model"] for s in man["sources"]}),
            "sources": man["sources"],
            "excluded_models": [man["excluded"]["model"]],
            "train_weights": man["counts"]["train_weights"], "val_weights": man["counts"]["val_weights"],
            **training,
        },
        "validation": {
            "data": (f"{res['chunks']} chunks ({res['weights']} weights) of the held-out validation tensors of "
                     f"{man['name']} (whole layers, see manifest split)" +
                     ("" if not args.max_val_chunks else f"; uniform random subset (seed 7) of "
                      f"{val.shape[0] * val.shape[1] // CHUNK} chunks") + "; every chunk coded at each q"),
            "mse_domain": "standardized chunks (unit variance); mse_rownorm = mse * std^2 (row-normalized weights)",
            "bpw_note": "bits per coded weight, payload only (no row scales / q maps / headers). est_bpw: entropy "
                        "model -log2 p (continuous density); table_bpw: exact code length under entropy.json "
                        "(escapes costed as ortcodec/entropy's bypass scheme); rans_bpw: real bytes of the reference python rANS "
                        "(scripts/train/rans.py) on the first rans_chunks chunks; go_bpw: real bytes of the Go coder "
                        "(ortcodec/entropy.EncodeStreams, K=4096, round trip checked) on the same chunks; "
                        "mixed_*: weighted by the method's share of columns per level (88.9/10/1/0.1 %)" +
                        bpw_note_extra,
            **res,
        },
        "parity_check_python_ort": par,
        "files": files,
    }
    write_json(os.path.join(out, "card.json"), card)
    log(f"{name}: exported to {out} in {time.time() - t0:.0f}s; files " +
        ", ".join(f"{k} {v['bytes']}" for k, v in files.items()))


if __name__ == "__main__":
    main()
