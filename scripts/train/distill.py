#!/usr/bin/env python3
"""Distill a small decoder for a shipped codec: same encoder, same entropy tables, a
cheaper decoder (a .nwc file's symbols are the parent's; only the decode network changes).

The parent's PyTorch checkpoint is not needed (nor kept): its exported encoder.onnx runs
in ONNX Runtime (Python, 1 thread) on the training chunks, the latents are quantized with
the parent's medians exactly as the Go side does (s = round_half_even(y - median) in
float32, y_hat = float32(s) + median, per-level medians from entropy.json
median_f32_bits, row q*16 + c), and the student decoder (model.py's decoder: Linear(16->W),
D residual blocks with the quality embedding, Linear(W->16), the linear 16->16 skip and a
per-(level, channel) input gain exp(-G[q])) is trained to minimise the MSE to the ORIGINAL
standardized chunk (no term matching the parent decoder's output). The rate term is
constant (the symbols are fixed), so the loss is the MSE alone. Same schedule as train.py
(Adam lr 1e-3, warm-up, cosine to 1e-4, grad clip 1.0, 64 rows x 64 chunks per step,
q uniform per row, seed 0). G starts at the per-(level, channel) least-squares slope of x
on y_hat over the first 64 training rows at each level, the skip at identity.

Export (models/<parent>-dw<W>d<D>/): encoder.onnx and entropy.json byte copies of the
parent's, the new decoder.onnx (standardization inside, as export.ExportDecoder), card.json
(distilled_from: parent name + sha256 of its encoder.onnx and entropy.json;
architecture.decoder_width / decoder_blocks) and parity.bin, validated like export.py.

  python scripts/train/distill.py --parent models/nwc-w128d2-l300 --width 32 --depth 1
  python scripts/train/distill.py --parent models/nwc-w128d2-l300 --width 32 --depth 1 --export-only
"""
import argparse
import csv
import json
import os
import shutil
import sys
import time

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export as ex  # noqa: E402
from common import CHUNK, CHUNKS_PER_ROW, log, nwc_cache, repo_root, sha256_file, write_json  # noqa: E402
from model import ExportDecoder, MLPCoder, initial_log_gain  # noqa: E402
from train import load_data, lr_schedule, val_subset  # noqa: E402


class Parent:
    """The parent codec's encoder (ONNX Runtime) and quantizer (entropy.json medians)."""

    def __init__(self, folder, threads=1):
        import onnxruntime as ort
        self.folder = folder
        self.card = json.load(open(os.path.join(folder, "card.json")))
        self.ent = json.load(open(os.path.join(folder, "entropy.json")))
        self.tables = self.ent["channels"]
        assert self.ent.get("levels", 1) == 4 and len(self.tables) == 4 * CHUNK
        self.med = np.array([c["median_f32_bits"] for c in self.tables], dtype="<u4").view("<f4").reshape(4, CHUNK)
        sd = self.card["io"]["inside_graph_standardization"]
        self.mean = np.array([sd["mean_f32_bits"]], dtype="<u4").view("<f4")[0]
        self.std = np.array([sd["std_f32_bits"]], dtype="<u4").view("<f4")[0]
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(os.path.join(folder, "encoder.onnx"), so, providers=["CPUExecutionProvider"])
        # table probabilities for the rate estimate (the parent's continuous density is not kept)
        self.logp = []
        for t in self.tables:
            cdf = np.asarray(t["cdf"], dtype=np.float64)
            self.logp.append(np.log2(np.diff(cdf) / cdf[-1]))

    def encode_rn(self, x_rn, q):
        """Row-normalized chunks [N,16] float32, q [N] -> y (numpy float32), as encoder.onnx."""
        return self.sess.run(["y"], {"x": np.ascontiguousarray(x_rn, dtype=np.float32),
                                     "q": np.ascontiguousarray(q, dtype=np.int64)})[0]

    def quantize(self, y, q):
        """s = round_half_even(y - median) in float32; y_hat = float32(s) + median."""
        m = self.med[q]
        s = np.round((y - m).astype(np.float32))
        return s.astype(np.int32), (s + m).astype(np.float32)

    def table_p(self, s, q):
        """Probability of each symbol under entropy.json (escapes: the escape symbol's)."""
        out = np.empty(s.shape, dtype=np.float64)
        for c in range(CHUNK):
            for lv in range(4):
                m = q == lv
                t = self.tables[lv * CHUNK + c]
                L = len(t["cdf"]) - 2
                i = s[m, c].astype(np.int64) - t["offset"]
                i = np.where((i < 0) | (i >= L), L, i)
                out[m, c] = 2.0 ** self.logp[lv * CHUNK + c][i]
        return out


class StudentDecoder(nn.Module):
    """x_hat = MLPCoder(y_hat * exp(-G[q]), E[q]) (model.NWCCodec's decoder alone)."""

    arch = "mlp"

    def __init__(self, width, depth, d=CHUNK, levels=4, mean=0.0, std=1.0, lmbda=None):
        super().__init__()
        self.width, self.depth, self.d, self.levels = width, depth, d, levels
        self.q_embed = nn.Embedding(levels, width)
        nn.init.ones_(self.q_embed.weight)
        self.decoder = MLPCoder(d, width, depth)
        self.log_gain = nn.Parameter(initial_log_gain(lmbda, levels, d) if lmbda else torch.zeros(levels, d))
        self.register_buffer("in_mean", torch.tensor(float(mean)))
        self.register_buffer("in_std", torch.tensor(float(std)))

    def decode(self, y_hat, q):
        return self.decoder(y_hat * torch.exp(-self.log_gain[q]), self.q_embed(q))


class DistilledCodec:
    """What export.finish needs: parent encoder/quantizer + student decoder, standardized domain."""

    def __init__(self, parent, student):
        self.p, self.s = parent, student
        self.in_mean, self.in_std = student.in_mean, student.in_std
        self.entropy = self

    def eval(self):
        self.s.eval()
        return self

    def encode(self, x, q):
        x_rn = x * self.in_std + self.in_mean
        return torch.from_numpy(self.p.encode_rn(x_rn.numpy(), q.numpy()))

    def decode(self, y_hat, q):
        return self.s.decode(y_hat, q)

    def quantize(self, y, q):
        s, y_hat = self.p.quantize(y.numpy(), q.numpy())
        return torch.from_numpy(s), torch.from_numpy(y_hat)

    def likelihood(self, y_hat, q):
        qn = q.numpy()
        s = np.round(y_hat.numpy() - self.p.med[qn]).astype(np.int32)
        return torch.from_numpy(self.p.table_p(s, qn))


def batch_latents(parent, x, q):
    """Standardized chunks (torch) -> y_hat (torch) through the parent's encoder and quantizer."""
    x_rn = (x * torch.tensor(parent.std) + torch.tensor(parent.mean)).numpy()
    _, y_hat = parent.quantize(parent.encode_rn(x_rn, q.numpy()), q.numpy())
    return torch.from_numpy(y_hat)


def init_gain(student, parent, train, g, rows=64):
    """G[q, c] = -log(least-squares slope of x_c on y_hat_c) at each level (deterministic)."""
    idx = np.sort(g.choice(train.shape[0], size=rows, replace=False))
    x = torch.from_numpy(np.ascontiguousarray(train[idx])).reshape(-1, CHUNK)
    with torch.no_grad():
        for lv in range(4):
            q = torch.full((x.shape[0],), lv, dtype=torch.long)
            yh = batch_latents(parent, x, q).double()
            slope = (yh * x.double()).sum(0) / (yh * yh).sum(0).clamp_min(1e-30)
            student.log_gain[lv] = -torch.log(slope.clamp_min(1e-12)).float()


@torch.no_grad()
def val_mse(student, yv, xv, qv):
    student.eval()
    e = ((student.decode(yv, qv) - xv) ** 2).mean(1)
    student.train()
    return [float(e[qv == lv].mean()) for lv in range(4)]


def plot(csv_path, png_path, title):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:  # pragma: no cover
        return
    rows = list(csv.DictReader(open(csv_path)))
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    ax.plot([int(r["step"]) for r in rows], [float(r["mse"]) for r in rows], lw=0.8, label="train (mixed q, EMA)")
    v = [r for r in rows if r.get("val_mse0")]
    for lv in range(4):
        ax.plot([int(r["step"]) for r in v], [float(r[f"val_mse{lv}"]) for r in v], "o-", ms=2, label=f"val q={lv}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("MSE (unit-variance input)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path, dpi=90)
    plt.close(fig)


def train(args, parent, name, rdir, logdir):
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    ds_dir = args.data if os.path.isdir(args.data) else os.path.join(nwc_cache(), "train-data", args.data)
    man, tr, val = load_data(ds_dir)
    lam = parent.card["training"]["lambda"]
    student = StudentDecoder(args.width, args.depth, mean=man["global_mean"], std=man["global_std"], lmbda=lam)
    assert np.float32(man["global_mean"]) == parent.mean and np.float32(man["global_std"]) == parent.std, \
        "dataset standardization differs from the parent's card"
    g = np.random.default_rng(args.seed)
    init_gain(student, parent, tr, g)
    xv, qv = val_subset(val, args.val_rows)
    yv = batch_latents(parent, xv, qv)
    opt = torch.optim.Adam(student.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_schedule(args.steps))
    csv_path = os.path.join(logdir, f"{name}.csv")
    fields = ["step", "time_s", "lr", "mse", "enc_s"] + [f"val_mse{lv}" for lv in range(4)]
    fcsv = open(csv_path, "w", newline="")
    wr = csv.DictWriter(fcsv, fieldnames=fields)
    wr.writeheader()
    nparam = sum(p.numel() for p in student.parameters())
    log(f"distill {name}: parent {parent.card['name']} (lambda {lam:g}), decoder W {args.width} D {args.depth}, "
        f"{nparam} params, {args.steps} steps x {args.batch} rows; init val mse " +
        " ".join(f"{m:.3e}" for m in val_mse(student, yv, xv, qv)))
    t0, t_enc, ema = time.time(), 0.0, None
    for step in range(1, args.steps + 1):
        idx = g.integers(0, tr.shape[0], size=args.batch)
        x = torch.from_numpy(tr[idx]).reshape(-1, CHUNK)
        q = torch.from_numpy(np.repeat(g.integers(0, 4, size=args.batch), CHUNKS_PER_ROW)).long()
        te = time.time()
        y_hat = batch_latents(parent, x, q)
        t_enc += time.time() - te
        loss = ((student.decode(y_hat, q) - x) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), args.clip)
        opt.step()
        sched.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        do_eval = step % args.eval_every == 0 or step == args.steps
        if step % 10 == 0 or do_eval:
            rec = {"step": step, "time_s": f"{time.time() - t0:.1f}", "lr": f"{sched.get_last_lr()[0]:.3g}",
                   "mse": f"{ema:.5g}", "enc_s": f"{t_enc:.1f}"}
            if do_eval:
                vm = val_mse(student, yv, xv, qv)
                rec.update({f"val_mse{lv}": f"{vm[lv]:.5g}" for lv in range(4)})
                log(f"{name} step {step}/{args.steps} {time.time() - t0:.0f}s (parent encoder {t_enc:.0f}s) "
                    f"mse {ema:.4e} | val mse q0..3 " + " ".join(f"{m:.3e}" for m in vm))
            wr.writerow(rec)
            fcsv.flush()
    fcsv.close()
    elapsed = time.time() - t0
    torch.save({"model": student.state_dict(), "config": {"width": args.width, "depth": args.depth},
                "mean": man["global_mean"], "std": man["global_std"], "lambda": lam}, os.path.join(rdir, "final.pt"))
    info = {"name": name, "parent": parent.card["name"], "dataset_dir": ds_dir, "steps": args.steps,
            "elapsed_s": round(elapsed, 1), "parent_encoder_s": round(t_enc, 1), "args": vars(args),
            "command": " ".join(["scripts/train/distill.py"] + sys.argv[1:]),
            "final_val_subset_mse": val_mse(student, yv, xv, qv)}
    write_json(os.path.join(rdir, "train.json"), info)
    plot(csv_path, os.path.join(logdir, f"{name}.png"), f"{name} (distilled decoder; {' '.join(sys.argv[1:])})")
    log(f"done {name}: {args.steps} steps in {elapsed:.0f}s -> {rdir}/final.pt")


def do_export(args, parent, name, rdir, out):
    st = torch.load(os.path.join(rdir, "final.pt"), weights_only=False)
    info = json.load(open(os.path.join(rdir, "train.json")))
    cfg = st["config"]
    student = StudentDecoder(cfg["width"], cfg["depth"], mean=st["mean"], std=st["std"])
    student.load_state_dict(st["model"])
    student.eval()
    os.makedirs(out, exist_ok=True)
    for f in ("encoder.onnx", "entropy.json"):
        shutil.copyfile(os.path.join(parent.folder, f), os.path.join(out, f))
    dec = ExportDecoder(student).eval()
    xs, qs = torch.randn(8, CHUNK), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    ex.onnx_export(dec, (xs, qs), os.path.join(out, "decoder.onnx"), ["y_hat", "q"], "x_hat")
    codec = DistilledCodec(parent, student)

    def enc(x_rn, q):
        return torch.from_numpy(parent.encode_rn(x_rn.numpy(), q.numpy()))

    pa = parent.card["architecture"]
    W, D = cfg["width"], cfg["depth"]
    arch = {
        "kind": "mlp", "chunk": CHUNK, "width": W, "blocks": D, "quality_levels": 4,
        "decoder_width": W, "decoder_blocks": D,
        "encoder_width": pa["width"], "encoder_blocks": pa["blocks"],
        "encoder_params": pa["encoder_params"],
        "decoder_params": sum(p.numel() for p in student.parameters()),
        "decoder_macs_per_chunk": ex.decoder_macs(W, D),
        "decoder_macs_per_weight": ex.decoder_macs(W, D) / CHUNK,
        "entropy_model": pa["entropy_model"] + " (the parent's tables, byte copy)",
        "note": "width/blocks are the decoder's; the encoder is the parent's (encoder_width/encoder_blocks)",
    }
    extra = {"distilled_from": {
        "name": parent.card["name"],
        "encoder_sha256": sha256_file(os.path.join(parent.folder, "encoder.onnx")),
        "entropy_sha256": sha256_file(os.path.join(parent.folder, "entropy.json")),
        "method": "decoder trained on the parent's quantized latents (parent encoder.onnx in ONNX Runtime, "
                  "entropy.json medians, round half to even) to minimise MSE to the original standardized chunk; "
                  "no term matching the parent decoder's output",
    }}
    pt = parent.card["training"]
    a = info["args"]
    training = {"steps": info["steps"], "batch_rows": a["batch"], "batch_chunks": a["batch"] * 64,
                "lambda": pt["lambda"], "rate_c": pt["rate_c"], "lr": a["lr"], "grad_clip": a["clip"],
                "seed": a["seed"], "threads": a["threads"], "wall_time_s": info["elapsed_s"],
                "parent_encoder_s": info["parent_encoder_s"], "loss": "MSE(decoder(y_hat), x) only (rate fixed)",
                "command": info["command"]}
    note = ("; distilled codec: the encoder and tables are the parent's, so the symbols and rates are the "
            "parent's up to ONNX Runtime vs PyTorch rounding-boundary cases; est_bpw here is -log2 of the "
            "table probability (the parent's continuous density is not kept; escapes: the escape symbol only)")
    ex.finish(codec, enc, dec, out, name, info["dataset_dir"], parent.tables, args, arch, training,
              extra=extra, bpw_note_extra=note)
    for f, k in (("encoder.onnx", "encoder_sha256"), ("entropy.json", "entropy_sha256")):
        assert sha256_file(os.path.join(out, f)) == extra["distilled_from"][k], f


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parent", required=True, help="shipped codec folder (models/nwc-w128d2-l300)")
    ap.add_argument("--data", default="nwc-ds-v1")
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--depth", type=int, default=1)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--val-rows", type=int, default=512)
    ap.add_argument("--name", default=None, help="default <parent>-dw<W>d<D>")
    ap.add_argument("--out", default=None, help="default models/<name>")
    ap.add_argument("--logdir", default=None, help="default docs/results/training")
    ap.add_argument("--export-only", action="store_true")
    ap.add_argument("--no-export", action="store_true")
    ex.add_export_args(ap)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    parent = Parent(args.parent.rstrip("/"), threads=1)
    name = args.name or f"{parent.card['name']}-dw{args.width}d{args.depth}"
    rdir = os.path.join(nwc_cache(), "train-runs", name)
    logdir = args.logdir or os.path.join(repo_root(), "docs", "results", "training")
    os.makedirs(rdir, exist_ok=True)
    os.makedirs(logdir, exist_ok=True)
    if not args.export_only:
        train(args, parent, name, rdir, logdir)
    if not args.no_export:
        do_export(args, parent, name, rdir, args.out or os.path.join(repo_root(), "models", name))


if __name__ == "__main__":
    main()
