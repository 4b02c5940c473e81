#!/usr/bin/env python3
"""Runs table (markdown) and rate-distortion plot from the shipped codecs' card.json.

  python scripts/train/summarize.py models/nwc-w128d2-l*   # -> docs/results/training/{runs.md,rd.png}
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import repo_root  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--out", default=os.path.join(repo_root(), "docs", "results", "training"))
    args = ap.parse_args()
    cards = [json.load(open(os.path.join(f, "card.json"))) for f in args.folders]
    cards.sort(key=lambda c: c["training"]["lambda"])
    lines = ["| codec | lambda | steps | train time | q | val MSE | est. bits/w | table bits/w | Go bytes bits/w | Go/est |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for c in cards:
        t, v = c["training"], c["validation"]
        for r in v["levels"]:
            go = r.get("go_bpw")
            lines.append(f"| {c['name']} | {t['lambda']:g} | {t['steps']} | {t['wall_time_s'] / 60:.1f} min | {r['q']} | "
                         f"{r['mse']:.3e} | {r['est_bpw']:.3f} | {r['table_bpw']:.3f} | "
                         f"{'%.3f' % go if go else '-'} | {'%.4f' % (go / r['est_bpw']) if go else '-'} |")
    md = "\n".join(lines) + "\n"
    os.makedirs(args.out, exist_ok=True)
    open(os.path.join(args.out, "runs.md"), "w").write(md)
    print(md)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:
        return
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for lv in range(4):
        xs = [c["validation"]["levels"][lv].get("go_bpw", c["validation"]["levels"][lv]["table_bpw"]) for c in cards]
        ys = [c["validation"]["levels"][lv]["mse"] for c in cards]
        ax.plot(xs, ys, "o-", label=f"q={lv}")
        if lv == 0:
            for c, x, y in zip(cards, xs, ys):
                ax.annotate(f"λ={c['training']['lambda']:g}", (x, y), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
    import numpy as np
    r = np.linspace(2, 12, 50)
    ax.plot(r, 1.42 * 2.0 ** (-2 * r), "k:", lw=0.8, label="Gaussian ECSQ (high-rate)")
    ax.set_yscale("log")
    ax.set_xlabel("bits/weight (Go coder, real bytes; payload only)")
    ax.set_ylabel("validation MSE (unit-variance input)")
    ax.set_title(f"{cards[0]['name'].rsplit('-l', 1)[0]}: held-out tensors", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "rd.png"), dpi=90)


if __name__ == "__main__":
    main()
