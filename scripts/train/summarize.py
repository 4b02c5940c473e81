#!/usr/bin/env python3
"""Runs table (markdown) and rate-distortion plot from the shipped codecs' card.json.

  python scripts/train/summarize.py models/nwc-*   # -> docs/results/training/{runs.md,rd.png}

Codecs are grouped by family (the name without -l<lambda>; a distilled decoder is
"<parent family> + dw<W>d<D>"). "vs ECSQ" = Go bits/weight minus the rate the Gaussian
high-rate ECSQ line 1.42 * 2^(-2R) needs for the same MSE (negative: below the line).
"""
import argparse
import json
import math
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import repo_root  # noqa: E402


def family(card):
    n = card["name"]
    d = card.get("distilled_from")
    if d:
        return re.sub(r"-l[0-9.]+$", "", d["name"]) + " + " + n.rsplit("-", 1)[1]
    return re.sub(r"-l[0-9.]+$", "", n)


def ecsq_gap(bpw, mse):
    return bpw + 0.5 * math.log2(mse / 1.42)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--out", default=os.path.join(repo_root(), "docs", "results", "training"))
    args = ap.parse_args()
    cards = [json.load(open(os.path.join(f, "card.json"))) for f in args.folders]
    cards.sort(key=lambda c: (family(c), c["training"]["lambda"]))
    lines = ["| codec | kind | dec MACs/w | lambda | steps | train time | mixed Go bits/w | q | val MSE | est. bits/w | "
             "table bits/w | Go bytes bits/w | Go/est | vs ECSQ |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in cards:
        t, v, a = c["training"], c["validation"], c["architecture"]
        kind = a.get("kind", "mlp") + (" (distilled)" if c.get("distilled_from") else "")
        for r in v["levels"]:
            go = r.get("go_bpw")
            lines.append(f"| {c['name']} | {kind} | {a['decoder_macs_per_weight']:g} | {t['lambda']:g} | {t['steps']} | "
                         f"{t['wall_time_s'] / 60:.1f} min | {v.get('mixed_go_bpw', float('nan')):.3f} | {r['q']} | "
                         f"{r['mse']:.3e} | {r['est_bpw']:.3f} | {r['table_bpw']:.3f} | "
                         f"{'%.3f' % go if go else '-'} | {'%.4f' % (go / r['est_bpw']) if go else '-'} | "
                         f"{'%+.3f' % ecsq_gap(go or r['table_bpw'], r['mse'])} |")
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
    import numpy as np
    fams = sorted({family(c) for c in cards})
    fig, axs = plt.subplots(2, 4, figsize=(17, 7.5))
    for lv in range(4):
        ax, gx = axs[0, lv], axs[1, lv]
        for fi, fam in enumerate(fams):
            cs = [c for c in cards if family(c) == fam]
            xs = [c["validation"]["levels"][lv].get("go_bpw", c["validation"]["levels"][lv]["table_bpw"]) for c in cs]
            ys = [c["validation"]["levels"][lv]["mse"] for c in cs]
            macs = cs[0]["architecture"]["decoder_macs_per_weight"]
            fmt = "os^Dvx*"[fi % 7] + "-"
            ax.plot(xs, ys, fmt, ms=4, lw=1, label=f"{fam} ({macs:g} MACs/w)")
            gx.plot(xs, [ecsq_gap(x, y) for x, y in zip(xs, ys)], fmt, ms=4, lw=1, label=f"{fam} ({macs:g} MACs/w)")
            if lv == 0 and fam.endswith("w128d2"):
                for c, x, y in zip(cs, xs, ys):
                    ax.annotate(f"λ={c['training']['lambda']:g}", (x, y), fontsize=7, xytext=(3, 3),
                                textcoords="offset points")
        xs_all = [c["validation"]["levels"][lv].get("go_bpw", c["validation"]["levels"][lv]["table_bpw"]) for c in cards]
        r = np.linspace(min(xs_all) - 0.2, max(xs_all) + 0.2, 50)
        ax.plot(r, 1.42 * 2.0 ** (-2 * r), "k:", lw=0.8, label="Gaussian ECSQ (high-rate)")
        gx.axhline(0, color="k", ls=":", lw=0.8)
        ax.set_yscale("log")
        ax.set_title(f"q = {lv}: MSE vs rate", fontsize=9)
        gx.set_title(f"q = {lv}: bits above the ECSQ line at equal MSE (lower is better)", fontsize=8)
        for a in (ax, gx):
            a.grid(alpha=0.3)
            a.set_xlabel("bits/weight (Go coder, real bytes; payload only)", fontsize=8)
        ax.set_ylabel("validation MSE (unit-variance input)", fontsize=8)
        gx.set_ylabel("R - R_ecsq(MSE) [bits/weight]", fontsize=8)
    axs[0, 0].legend(fontsize=6)
    fig.suptitle("NWC codecs on the held-out tensors (262k chunks, every chunk at each q)", fontsize=10)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "rd.png"), dpi=90)


if __name__ == "__main__":
    main()
