#!/usr/bin/env bash
# The ablation table of issue 13 on smollm2-135m: what each part of nwc
# adds, in one harness (one-pass calibration on $TOKENS tokens, `nwc eval
# --max-windows $WINDOWS` against the reference, WikiText-2 test, windows of
# 2048), side by side in one run. Writes docs/results/ablation-$MODEL.{md,json}.
#
#   levels      nwc with its importance levels (the top 0.1/1/10 % of input
#               columns by diag(H) at levels 3/2/1) and with every column at
#               level 0 (--uniform-levels; H still drives the LDLQ feedback);
#               ECSQ with the same levels (--codec ecsq:levels, one step per
#               level) and with one step, at the rates nwc reached
#   network-free  the gain codecs (latents times a learned per-level,
#               per-channel gain; no MLP) at the same lambdas
#   stronger codec  the W=128 D=2 parents of the default decoders, the same
#               trained 4x longer (6000 steps, ~4 epochs), and twice as wide
#               (W=256 D=2, 6000 steps): models/nwc-w{128,256}d2-l*-s6k, trained
#               by scripts/train/run_all.sh (STEPS=6000, NAME_SUFFIX=-s6k)
#   row scales  --tune-row-scales: each fp16 row scale refit after coding to
#               minimize its row's H-weighted error (closed form), for nwc
#               and ecsq:levels
#
# Resumable: a step whose JSON is in $OUT is skipped (delete $OUT to start
# over). ONLY="name ..." restricts the runs.
set -euo pipefail
cd "$(dirname "$0")/.."
NWC=${NWC:-bin/nwc}
MODEL=${MODEL:-smollm2-135m}
TOKENS=${TOKENS:-65536}
WINDOWS=${WINDOWS:-4}
OUT=${OUT:-out/ablation}
RESULTS=${RESULTS:-docs/results}
[[ -x "$NWC" ]] || make build
mkdir -p "$OUT"
. scripts/lib/compress-eval.sh

# group | name | codec | --bits | more compress flags
RUNS="
levels|nwc-3-levels|nwc|3|
levels|nwc-3-uniform|nwc|3|--uniform-levels
levels|ecsq-3.118-levels|ecsq:levels|3.118|
levels|ecsq-3.016-uniform|ecsq|3.016|
levels|nwc-4-levels|nwc|4|
levels|nwc-4-uniform|nwc|4|--uniform-levels
levels|ecsq-3.902-levels|ecsq:levels|3.902|
levels|ecsq-3.797-uniform|ecsq|3.797|
row scales|nwc-3-tuned|nwc|3|--tune-row-scales
row scales|ecsq-3.118-tuned|ecsq:levels|3.118|--tune-row-scales
row scales|nwc-4-tuned|nwc|4|--tune-row-scales
row scales|ecsq-3.902-tuned|ecsq:levels|3.902|--tune-row-scales
network-free|gain-l100|nwc:nwc-gain-l100|3|
network-free|gain-l300|nwc:nwc-gain-l300|4|
stronger codec|w128d2-l100|nwc:nwc-w128d2-l100|3|
stronger codec|w128d2-l100-s6k|nwc:nwc-w128d2-l100-s6k|3|
stronger codec|w256d2-l100-s6k|nwc:nwc-w256d2-l100-s6k|3|
stronger codec|w128d2-l300|nwc:nwc-w128d2-l300|4|
stronger codec|w128d2-l300-s6k|nwc:nwc-w128d2-l300-s6k|4|
stronger codec|w256d2-l300-s6k|nwc:nwc-w256d2-l300-s6k|4|
"
while IFS='|' read -r group name c bits flags; do
	[[ -z "$name" ]] && continue
	[[ -n "${ONLY:-}" && " $ONLY " != *" $name "* ]] && continue
	if [[ $c == nwc:* && ! -d "models/${c#nwc:}" ]]; then
		echo "run-ablation.sh: models/${c#nwc:} missing, $name skipped" >&2
		continue
	fi
	# shellcheck disable=SC2086 # flags are words
	compress_eval "$name" --codec "$c" --bits "$bits" --calib-tokens "$TOKENS" $flags
done <<<"$RUNS"

OUT="$OUT" RESULTS="$RESULTS" MODEL="$MODEL" TOKENS="$TOKENS" WINDOWS="$WINDOWS" RUNS="$RUNS" python3 - <<'PY'
import json, os
out, res, model = os.environ["OUT"], os.environ["RESULTS"], os.environ["MODEL"]
rows = []
for line in os.environ["RUNS"].strip().splitlines():
    group, name, c, bits, flags = line.split("|")
    try:
        cj = json.load(open(f"{out}/{name}.compress.json"))
        e = json.load(open(f"{out}/{name}.eval.json"))
    except FileNotFoundError:
        continue
    rows.append({"group": group, "name": name, "codec": cj["codec"], "bits": float(bits), "flags": flags,
                 "linear_bits_per_weight": cj["linear_bits_per_weight"], "bits_per_weight": cj["bits_per_weight"],
                 "mean_kl": e.get("mean_kl"), "perplexity": e["perplexity"], "top1_agreement": e.get("top1_agreement"),
                 "windows": e["windows"], "tokens_scored": e["tokens_scored"]})
name = f"ablation-{model}"
json.dump({"model": model, "calib_tokens": int(os.environ["TOKENS"]), "eval_windows": int(os.environ["WINDOWS"]), "rows": rows},
          open(f"{res}/{name}.json", "w"), indent=2)
md = [f"# {model}: what each part of nwc adds (issue 13 ablations)", "",
      f"Regenerate: `scripts/run-ablation.sh` ({os.environ['TOKENS']} calibration tokens, one-pass; "
      f"`nwc eval --max-windows {os.environ['WINDOWS']}` on WikiText-2 test, seq-len 2048, KL against the reference model). "
      "Bits/weight: the block linears, every byte of side information counted.", "",
      "- levels: nwc's default gives the top 0.1 / 1 / 10 % of input columns by diag(H) quality levels 3 / 2 / 1; "
      "`--uniform-levels` puts every column at level 0 (H still drives the LDLQ error feedback). "
      "`ecsq:levels` gives ECSQ the same column levels, level q quantized with step x sqrt(c[q]/c[0]) "
      "(1, 0.594, 0.171, 0.121, from the method's rate weights c), a table per level; `ecsq` has one step. "
      "ECSQ's --bits targets are the rates nwc reached.",
      "- row scales: `--tune-row-scales` refits each fp16 row scale after coding to minimize the row's H-weighted error (closed form).",
      "- network-free: `nwc-gain-l*`, no MLP (latents times a learned per-level, per-channel gain).",
      "- stronger codec: the W=128 D=2 parents of the default decoders (1500 steps), the same trained 6000 steps (`-s6k`), "
      "and W=256 D=2 trained 6000 steps.", "",
      "| ablation | run | codec | flags | bits/weight | mean KL (nats) | perplexity | top-1 agreement |",
      "|---|---|---|---|---|---|---|---|"]
f = lambda v, p: "-" if v is None else f"{v:.{p}f}"
for r in rows:
    md.append(f"| {r['group']} | {r['name']} | {r['codec']} | {('`' + r['flags'] + '`') if r['flags'] else ''} | "
              f"{r['linear_bits_per_weight']:.3f} | {f(r['mean_kl'], 4)} | {r['perplexity']:.2f} | {f(r['top1_agreement'], 3)} |")
open(f"{res}/{name}.md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
