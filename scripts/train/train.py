#!/usr/bin/env python3
"""Train one NWC codec (one lambda) on the weight dataset built by dataset.py.

Loss per chunk: lambda * MSE + c[q] * rate, rate = -log2 p(y~) per weight (mean over the
chunk's 16 latents), c = [3.4, 1.2, 0.1, 0.05], q uniform per training row (64 chunks),
additive uniform noise; the quantile (aux) loss with its own Adam (lr 1e-2; the quantiles
are set exactly by bisection at the end).
Stops by itself after --steps, checkpoints every --ckpt-every steps (--resume picks
up the last one), prints progress, writes <run>/log.csv and a loss-curve PNG.

  python scripts/train/train.py --lmbda 300 --width 128 --depth 2 --steps 4000
  python scripts/train/train.py --tiny            # CI: a few steps on nwc-ds-tiny
"""
import argparse
import csv
import json
import math
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import CHUNK, CHUNKS_PER_ROW, log, nwc_cache, repo_root, write_json  # noqa: E402
from model import RATE_C, make_codec  # noqa: E402


def run_name(width, depth, lmbda, arch="mlp"):
    if arch == "gain":
        return f"nwc-gain-l{lmbda:g}"
    return f"nwc-w{width}d{depth}-l{lmbda:g}"


def load_data(ds_dir):
    man = json.load(open(os.path.join(ds_dir, "manifest.json")))
    train = np.load(os.path.join(ds_dir, "train.npy"), mmap_mode="r")
    val = np.load(os.path.join(ds_dir, "val.npy"), mmap_mode="r")
    return man, train, val


def val_subset(val, rows, seed=1234):
    g = np.random.default_rng(seed)
    idx = np.sort(g.choice(val.shape[0], size=min(rows, val.shape[0]), replace=False))
    x = torch.from_numpy(np.ascontiguousarray(val[idx])).reshape(-1, CHUNK)
    q = torch.from_numpy(np.repeat(np.arange(len(idx)) % 4, CHUNKS_PER_ROW)).long()
    return x, q


@torch.no_grad()
def evaluate(model, x, q, bs=65536):
    """Hard-quantized evaluation: per quality level MSE (standardized domain) and the
    entropy model's estimated bits/weight (-log2 p of the rounded latents)."""
    model.eval()
    se = torch.zeros(4, dtype=torch.float64)
    bits = torch.zeros(4, dtype=torch.float64)
    n = torch.zeros(4, dtype=torch.float64)
    for i in range(0, x.shape[0], bs):
        xb, qb = x[i:i + bs], q[i:i + bs]
        x_hat, p, _ = model(xb, qb, noise=False)
        e = ((x_hat - xb) ** 2).sum(1).double()
        b = (-torch.log2(p)).sum(1).double()
        for lv in range(4):
            m = qb == lv
            se[lv] += e[m].sum()
            bits[lv] += b[m].sum()
            n[lv] += m.sum() * CHUNK
    model.train()
    n = n.clamp_min(1)
    return {"mse": (se / n).tolist(), "bpw": (bits / n).tolist()}


def lr_schedule(steps):
    """lr multiplier per step: linear warm-up (min(200, steps/20) steps), cosine decay to 1/10."""
    warm = max(1, min(200, steps // 20))

    def lr_at(s):
        if s < warm:
            return (s + 1) / warm
        t = (s - warm) / max(1, steps - warm)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    return lr_at


def save_ckpt(path, model, opt, aux_opt, sched, step, args, extra):
    tmp = path + ".tmp"
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "aux_opt": aux_opt.state_dict(),
                "sched": sched.state_dict(), "step": step, "args": vars(args), "extra": extra,
                "rng_torch": torch.get_rng_state(), "config": model.config()}, tmp)
    os.replace(tmp, path)


def plot(csv_path, png_path, title):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as e:  # pragma: no cover
        log(f"no matplotlib: {e}")
        return
    rows = list(csv.DictReader(open(csv_path)))
    if not rows:
        return
    st = [int(r["step"]) for r in rows]
    fig, ax = plt.subplots(1, 3, figsize=(14, 3.6))
    ax[0].plot(st, [float(r["loss"]) for r in rows], lw=0.8)
    ax[0].set_title("train loss (EMA)")
    ax[0].set_yscale("log")
    ax[1].plot(st, [float(r["mse"]) for r in rows], lw=0.8, label="train (noise)")
    v = [(int(r["step"]), r) for r in rows if r.get("val_mse0")]
    for lv in range(4):
        ax[1].plot([s for s, _ in v], [float(r[f"val_mse{lv}"]) for _, r in v], "o-", ms=2, label=f"val q={lv}")
        ax[2].plot([s for s, _ in v], [float(r[f"val_bpw{lv}"]) for _, r in v], "o-", ms=2, label=f"val q={lv}")
    ax[2].plot(st, [float(r["bpw"]) for r in rows], lw=0.8, label="train (noise, mixed q)")
    ax[1].set_yscale("log")
    ax[1].set_title("MSE (unit-variance input)")
    ax[2].set_title("est. bits/weight")
    for a in ax:
        a.set_xlabel("step")
        a.grid(alpha=0.3)
    ax[1].legend(fontsize=7)
    ax[2].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(png_path, dpi=90)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="nwc-ds-v1", help="dataset name under $NWC_CACHE/train-data or a path")
    ap.add_argument("--arch", choices=("mlp", "gain"), default="mlp",
                    help="mlp: encoder/decoder MLPs (--width/--depth); gain: network-free floor codec "
                         "(per-(level, channel) gain only, same entropy model, loss and schedule)")
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--lmbda", type=float, default=300)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=64, help="training rows (x64 chunks) per step")
    ap.add_argument("--lr", type=float, default=1e-3, help="peak Adam lr (cosine decay to lr/10)")
    ap.add_argument("--aux-lr", type=float, default=1e-2,
                    help="quantile (aux) Adam lr; quantiles are re-fitted exactly at the end")
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ckpt-every", type=int, default=500)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--val-rows", type=int, default=512, help="validation rows used during training")
    ap.add_argument("--name", default=None, help="run name (default nwc-w<W>d<D>-l<lambda>)")
    ap.add_argument("--runs", default=None, help="run dir root (default $NWC_CACHE/train-runs)")
    ap.add_argument("--logdir", default=None, help="where log CSV / PNG go (default docs/results/training)")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--tiny", action="store_true", help="CI: nwc-ds-tiny, 30 steps, w16 d1")
    args = ap.parse_args()
    if args.tiny:
        args.data = "nwc-ds-tiny" if args.data == "nwc-ds-v1" else args.data
        args.steps, args.batch, args.width, args.depth = 30, 8, 16, 1
        args.ckpt_every, args.eval_every, args.val_rows = 20, 15, 64
        args.name = args.name or "nwc-tiny"
        args.logdir = args.logdir or os.path.join(nwc_cache(), "train-runs", "tiny-logs")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    name = args.name or run_name(args.width, args.depth, args.lmbda, args.arch)
    ds_dir = args.data if os.path.isdir(args.data) else os.path.join(nwc_cache(), "train-data", args.data)
    rdir = os.path.join(args.runs or os.path.join(nwc_cache(), "train-runs"), name)
    logdir = args.logdir or os.path.join(repo_root(), "docs", "results", "training")
    os.makedirs(rdir, exist_ok=True)
    os.makedirs(logdir, exist_ok=True)
    ckpt = os.path.join(rdir, "last.pt")
    csv_path = os.path.join(logdir, f"{name}.csv")

    man, train, val = load_data(ds_dir)
    log(f"data {ds_dir}: train {train.shape}, val {val.shape}")
    xv, qv = val_subset(val, args.val_rows)

    model = make_codec(args.arch, args.width, args.depth, mean=man["global_mean"], std=man["global_std"],
                       lmbda=args.lmbda)
    opt = torch.optim.Adam(model.main_parameters(), lr=args.lr)
    aux_opt = torch.optim.Adam(model.aux_parameters(), lr=args.aux_lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_schedule(args.steps))
    step, elapsed0 = 0, 0.0
    g = np.random.default_rng(args.seed)
    if args.resume and os.path.exists(ckpt):
        st = torch.load(ckpt, weights_only=False)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        aux_opt.load_state_dict(st["aux_opt"])
        sched.load_state_dict(st["sched"])
        step = st["step"]
        elapsed0 = st["extra"].get("elapsed", 0.0)
        torch.set_rng_state(st["rng_torch"])
        g = np.random.default_rng([args.seed, step])
        log(f"resumed {ckpt} at step {step}")
        # keep the CSV rows up to the checkpoint
        if os.path.exists(csv_path):
            rows = [r for r in csv.DictReader(open(csv_path)) if int(r["step"]) <= step]
        else:
            rows = []
    else:
        rows = []
    fields = ["step", "time_s", "lr", "loss", "mse", "bpw", "aux"] + \
        [f"val_{k}{lv}" for k in ("mse", "bpw") for lv in range(4)]
    fcsv = open(csv_path, "w", newline="")
    wr = csv.DictWriter(fcsv, fieldnames=fields)
    wr.writeheader()
    for r in rows:
        wr.writerow(r)
    fcsv.flush()

    c = torch.tensor(RATE_C)
    lam = float(args.lmbda)
    t0 = time.time() - elapsed0
    ema = None
    if args.arch == "gain":
        nparam = model.log_gain.numel()
    else:
        nparam = sum(p.numel() for p in model.decoder.parameters()) + model.q_embed.weight.numel()
    log(f"run {name}: arch {args.arch} width {model.width} depth {model.depth} lambda {lam:g} steps {args.steps} "
        f"batch {args.batch} rows; decoder params {nparam}; threads {args.threads}")
    model.train()
    while step < args.steps:
        idx = g.integers(0, train.shape[0], size=args.batch)
        x = torch.from_numpy(train[idx]).reshape(-1, CHUNK)
        q = torch.from_numpy(np.repeat(g.integers(0, 4, size=args.batch), CHUNKS_PER_ROW)).long()
        x_hat, p, _ = model(x, q, noise=True)
        mse_c = ((x_hat - x) ** 2).mean(1)
        bits_c = (-torch.log2(p)).mean(1)
        loss = (lam * mse_c + c[q] * bits_c).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.main_parameters(), args.clip)
        opt.step()
        sched.step()
        aux = model.entropy.aux_loss()
        aux_opt.zero_grad(set_to_none=True)
        aux.backward()
        aux_opt.step()
        step += 1

        vals = (loss.item(), mse_c.mean().item(), bits_c.mean().item(), aux.item())
        ema = vals if ema is None else tuple(0.98 * a + 0.02 * b for a, b in zip(ema, vals))
        rec = None
        do_eval = step % args.eval_every == 0 or step == args.steps
        if step % 10 == 0 or do_eval:
            rec = {"step": step, "time_s": f"{time.time() - t0:.1f}", "lr": f"{sched.get_last_lr()[0]:.3g}",
                   "loss": f"{ema[0]:.5g}", "mse": f"{ema[1]:.5g}", "bpw": f"{ema[2]:.4f}", "aux": f"{ema[3]:.4g}"}
        if do_eval:
            ev = evaluate(model, xv, qv)
            for lv in range(4):
                rec[f"val_mse{lv}"] = f"{ev['mse'][lv]:.5g}"
                rec[f"val_bpw{lv}"] = f"{ev['bpw'][lv]:.4f}"
            el = time.time() - t0
            log(f"{name} step {step}/{args.steps} {el:.0f}s ({step / max(el, 1e-9):.1f} it/s) loss {ema[0]:.4f} "
                f"aux {ema[3]:.3g} | val mse q0..3 " + " ".join(f"{m:.2e}" for m in ev["mse"]) +
                " | bpw " + " ".join(f"{b:.2f}" for b in ev["bpw"]))
        if rec is not None:
            wr.writerow(rec)
            fcsv.flush()
        if step % args.ckpt_every == 0 or step == args.steps:
            save_ckpt(ckpt, model, opt, aux_opt, sched, step, args, {"elapsed": time.time() - t0})
    fcsv.close()
    elapsed = time.time() - t0
    aux_before = model.entropy.aux_loss().item()
    model.entropy.fit_quantiles()
    log(f"quantiles re-fitted by bisection: aux loss {aux_before:.4g} -> {model.entropy.aux_loss().item():.4g}")
    # final state for export
    final = os.path.join(rdir, "final.pt")
    save_ckpt(final, model, opt, aux_opt, sched, step, args, {"elapsed": elapsed})
    write_json(os.path.join(rdir, "train.json"), {
        "name": name, "dataset": man["name"], "dataset_dir": ds_dir, "steps": step, "elapsed_s": round(elapsed, 1),
        "args": vars(args), "config": model.config(), "command": " ".join(["scripts/train/train.py"] + sys.argv[1:]),
        "final_val_subset": evaluate(model, xv, qv)})
    plot(csv_path, os.path.join(logdir, f"{name}.png"), f"{name}  ({' '.join(sys.argv[1:])})")
    log(f"done {name}: {step} steps in {elapsed:.0f}s -> {final}")


if __name__ == "__main__":
    main()
