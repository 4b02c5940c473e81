#!/usr/bin/env bash
# Ablation of nwc's importance levels on smollm2-135m (issue 13): the
# default codec at ~3 and ~4 bits/weight with its levels (the top 0.1/1/10 %
# of input columns by diag(H) at levels 3/2/1) and with every column at
# level 0 (`nwc compress --uniform-levels`; H still drives the LDLQ error
# feedback), and the ECSQ baseline at the same rates with the same levels
# (`--codec ecsq:levels`, one step per level) and without (one step), side
# by side in one run: a 2 x 2 of {learned transform, scalar quantizer} x
# {levels, uniform}. RUNS lists CODEC:BITS:MODE; the ecsq targets are the
# rates nwc reached. Same harness as docs/results/rd-*:
# one-pass calibration on $TOKENS tokens, `nwc eval --max-windows $WINDOWS`
# against the reference model. Writes docs/results/ablation-levels-$MODEL.{md,json}.
#
# Resumable: a step whose JSON is in $OUT is skipped (delete $OUT to start over).
set -euo pipefail
cd "$(dirname "$0")/.."
NWC=${NWC:-bin/nwc}
MODEL=${MODEL:-smollm2-135m}
TOKENS=${TOKENS:-65536}
WINDOWS=${WINDOWS:-4}
OUT=${OUT:-out/ablation-levels}
RESULTS=${RESULTS:-docs/results}
RUNS=${RUNS:-"nwc:3:levels nwc:3:uniform ecsq:3.118:levels ecsq:3.016:uniform nwc:4:levels nwc:4:uniform ecsq:3.902:levels ecsq:3.797:uniform"}
mkdir -p "$OUT"
. scripts/lib/compress-eval.sh
for run in $RUNS; do
	IFS=: read -r c bits mode <<<"$run"
	case $c:$mode in
	nwc:levels) args=(--codec nwc) ;;
	nwc:uniform) args=(--codec nwc --uniform-levels) ;;
	ecsq:levels) args=(--codec ecsq:levels) ;;
	ecsq:uniform) args=(--codec ecsq) ;;
	*) echo "run-ablation-levels.sh: bad run $run" >&2 && exit 2 ;;
	esac
	compress_eval "$c-$bits-$mode" "${args[@]}" --bits "$bits" --calib-tokens "$TOKENS"
done
OUT="$OUT" RESULTS="$RESULTS" MODEL="$MODEL" TOKENS="$TOKENS" WINDOWS="$WINDOWS" RUNS="$RUNS" python3 - <<'PY'
import json, os
out, res, model = os.environ["OUT"], os.environ["RESULTS"], os.environ["MODEL"]
rows = []
for run in os.environ["RUNS"].split():
    c, bits, mode = run.split(":")
    n = f"{c}-{bits}-{mode}"
    try:
        c = json.load(open(f"{out}/{n}.compress.json"))
        e = json.load(open(f"{out}/{n}.eval.json"))
    except FileNotFoundError:
        continue
    rows.append({"bits": float(bits), "levels": mode, "codec": c["codec"], "linear_bits_per_weight": c["linear_bits_per_weight"],
                 "bits_per_weight": c["bits_per_weight"], "mean_kl": e.get("mean_kl"), "perplexity": e["perplexity"],
                 "top1_agreement": e.get("top1_agreement"), "windows": e["windows"], "tokens_scored": e["tokens_scored"]})
name = f"ablation-levels-{model}"
json.dump({"model": model, "calib_tokens": int(os.environ["TOKENS"]), "eval_windows": int(os.environ["WINDOWS"]), "rows": rows},
          open(f"{res}/{name}.json", "w"), indent=2)
md = [f"# {model}: nwc and ECSQ with and without the importance levels", "",
      f"Regenerate: `scripts/run-ablation-levels.sh` ({os.environ['TOKENS']} calibration tokens, one-pass; "
      f"`nwc eval --max-windows {os.environ['WINDOWS']}` on WikiText-2 test, seq-len 2048, KL against the reference model).", "",
      "- levels: the default, the top 0.1 / 1 / 10 % of input columns by diag(H) coded at quality levels 3 / 2 / 1, the rest at 0.",
      "- uniform: `--uniform-levels`, every column at level 0; H still drives the LDLQ error feedback.",
      "- ecsq levels: `--codec ecsq:levels`, the same column levels, level q quantized with step x sqrt(c[q]/c[0]) "
      "(1, 0.594, 0.171, 0.121 from the method's rate weights c), a table per level; ecsq uniform: one step. "
      "Their --bits targets are the rates nwc reached.", "",
      "| codec | --bits | levels | bits/weight (block linears) | mean KL (nats) | perplexity | top-1 agreement |",
      "|---|---|---|---|---|---|---|"]
f = lambda v, p: "-" if v is None else f"{v:.{p}f}"
for r in rows:
    md.append(f"| {r['codec']} | {r['bits']:g} | {r['levels']} | {r['linear_bits_per_weight']:.3f} | {f(r['mean_kl'], 4)} | "
              f"{r['perplexity']:.2f} | {f(r['top1_agreement'], 3)} |")
open(f"{res}/{name}.md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
