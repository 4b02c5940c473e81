#!/usr/bin/env bash
# One-pass vs sequential (GPTQ-protocol) calibration on smollm2-135m, 3 and
# 4 bits: gptq-g128, ecsq and nwc under both `nwc compress --calib`
# protocols, rtn-g128 as the no-calibration reference; KL and perplexity by
# `nwc eval --max-windows $WINDOWS` against the reference model.
# Writes docs/results/calib-protocol-smollm2-135m.{md,json}.
#
# Resumable: a step whose JSON is already in $OUT is skipped (delete $OUT to
# start over). Runs one compression at a time, nice'd (the machine is
# shared). Needs bin/nwc (make build) and the env of docs/ENVIRONMENT.md.
set -euo pipefail
cd "$(dirname "$0")/.."
NWC=${NWC:-bin/nwc}
MODEL=${MODEL:-smollm2-135m}
TOKENS=${TOKENS:-16384}
WINDOWS=${WINDOWS:-4}
OUT=${OUT:-out/calib-protocol}
RESULTS=${RESULTS:-docs/results}
NAME=${NAME:-calib-protocol-$MODEL}
RUNS=${RUNS:-"gptq-g128:3:sequential gptq-g128:3:onepass nwc:3:sequential nwc:3:onepass ecsq:3:sequential ecsq:3:onepass gptq-g128:4:sequential gptq-g128:4:onepass nwc:4:sequential nwc:4:onepass ecsq:4:sequential ecsq:4:onepass rtn-g128:3:none rtn-g128:4:none"}
mkdir -p "$OUT"

. scripts/lib/compress-eval.sh
for run in $RUNS; do
	IFS=: read -r codec bits proto <<<"$run"
	args=(--codec "$codec" --bits "$bits")
	[ "$proto" != none ] && args+=(--calib "$proto" --calib-tokens "$TOKENS")
	compress_eval "$codec-$bits-$proto" "${args[@]}"
done

OUT="$OUT" RESULTS="$RESULTS" NAME="$NAME" MODEL="$MODEL" TOKENS="$TOKENS" WINDOWS="$WINDOWS" RUNS="$RUNS" python3 - <<'PY'
import json, os
out, res, name = os.environ["OUT"], os.environ["RESULTS"], os.environ["NAME"]
rows = []
for run in os.environ["RUNS"].split():
    codec, bits, proto = run.split(":")
    n = f"{codec}-{bits}-{proto}"
    try:
        c = json.load(open(f"{out}/{n}.compress.json"))
        e = json.load(open(f"{out}/{n}.eval.json"))
    except FileNotFoundError:
        continue
    cal = c.get("calibration") or {}
    rows.append({"codec": codec, "bits": float(bits), "protocol": proto if proto != "none" else "-",
                 "codec_resolved": c["codec"], "linear_bits_per_weight": c["linear_bits_per_weight"],
                 "bits_per_weight": c["bits_per_weight"], "mean_kl": e.get("mean_kl"), "perplexity": e["perplexity"],
                 "top1_agreement": e.get("top1_agreement"), "windows": e["windows"], "tokens_scored": e["tokens_scored"],
                 "calib_tokens": cal.get("tokens"), "calib_seconds": cal.get("seconds"), "compress_seconds": c["seconds"]})
json.dump({"model": os.environ["MODEL"], "calib_tokens": int(os.environ["TOKENS"]), "eval_windows": int(os.environ["WINDOWS"]),
           "rows": rows}, open(f"{res}/{name}.json", "w"), indent=2)
md = [f"# {os.environ['MODEL']}: one-pass vs sequential calibration", "",
      f"Regenerate: `scripts/run-calib-protocol.sh` (resumable; {os.environ['TOKENS']} calibration tokens of the carried Gutenberg text, "
      f"first token of each window weighted x128; `nwc eval --max-windows {os.environ['WINDOWS']}` on WikiText-2 test, seq-len 2048, "
      "KL against the reference model).", "",
      "- onepass: every H = X^T X from the unquantized model (`--calib onepass`, the default).",
      "- sequential: GPTQ's protocol (`--calib sequential`): block by block, each block's H from the model whose earlier blocks are "
      "already coded and decoded back; inside a block q/k/v, then o, then gate/up, then down, each from the activations with the "
      "block's earlier linears coded.",
      "- rtn-g128 uses no calibration.", "",
      "| codec | bits | protocol | bits/weight (block linears) | mean KL (nats) | perplexity | top-1 agreement | H seconds | compress seconds |",
      "|---|---|---|---|---|---|---|---|---|"]
f = lambda v, p: "-" if v is None else f"{v:.{p}f}"
for r in rows:
    md.append(f"| {r['codec_resolved']} | {r['bits']:g} | {r['protocol']} | {r['linear_bits_per_weight']:.3f} | {f(r['mean_kl'], 4)} | "
              f"{r['perplexity']:.2f} | {f(r['top1_agreement'], 3)} | {f(r['calib_seconds'], 0)} | {r['compress_seconds']:.0f} |")
md += ["", "Seconds are wall time on a shared, loaded 2-core machine (not a speed measurement); \"H seconds\" of a sequential run "
       "is the block runs alone (the coding is in compress seconds)."]
open(f"{res}/{name}.md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
