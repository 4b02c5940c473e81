#!/usr/bin/env bash
# scripts/run-cross-model.sh: the cross-model table of issue 12
# (docs/results/cross-model.{md,json}): each model compressed by nwc codecs
# that never saw its weights and by codecs that did, against rtn-g128,
# gptq-g128 and ecsq at ~3 and ~4 bits/weight, on the same windows.
#
#   scripts/run-cross-model.sh            # reuse points already measured (--resume)
#   FRESH=1 scripts/run-cross-model.sh    # measure every point again
# Env: WINDOWS (default 4), NWC (default bin/nwc; built if missing),
#      MODELS (default "smollm2-135m gemma3-270m").
#
# Codecs (training sources in each models/<codec>/card.json):
#   nwc-w128d2-l{100,300}-dw32d1, nwc-w32d1-l{100,300}: trained on gemma3-270m + minilm-l6
#     (dataset nwc-ds-v1, smollm2-135m held out)
#   nwc-xg-w128d2-l{100,300}-dw32d1, nwc-xg-w32d1-l{100,300}: trained on smollm2-135m + minilm-l6
#     (dataset nwc-ds-xg: scripts/train/dataset.py --holdout gemma3-270m; gemma3-270m held out)
set -euo pipefail
cd "$(dirname "$0")/.."
WINDOWS="${WINDOWS:-4}"
NWC="${NWC:-bin/nwc}"
[[ -x "$NWC" ]] || go build -o bin/nwc ./cmd/nwc
# The distilled W=128 D=2 codecs (the default family) and the baselines first,
# the W=32 D=1 codecs trained from scratch last (a cut-short run keeps the core).
MAIN=nwc-w128d2-l100-dw32d1,nwc-w128d2-l300-dw32d1,nwc-xg-w128d2-l100-dw32d1,nwc-xg-w128d2-l300-dw32d1
MORE=nwc-w32d1-l100,nwc-w32d1-l300,nwc-xg-w32d1-l100,nwc-xg-w32d1-l300
for model in ${MODELS:-smollm2-135m gemma3-270m}; do
	[[ -n "${FRESH:-}" ]] && rm -f "docs/results/cross-$model.json"
	"$NWC" bench rd --model "$model" --max-windows "$WINDOWS" --resume --out docs/results --name "cross-$model" \
		--run nwc="$MAIN" --run rtn-g128=3,4 --run gptq-g128=3,4 --run ecsq=3.1,3.9 --run nwc="$MORE"
done
python3 scripts/cross_model_table.py
