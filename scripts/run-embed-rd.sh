#!/usr/bin/env bash
# Regenerates docs/results/embed-minilm-l6.{md,json,png}: all-MiniLM-L6-v2
# compressed with nwc (the default family's members at ~2.6/3.1/3.9/4.7/6.4
# bits/weight), ecsq, rtn-g128 and gptq-g128 at 2-6 bits, each compared with
# the uncompressed model's sentence embeddings on 1,000 WikiText-2 test
# sentences (nwc bench embed; eval/embed). gptq/ecsq/nwc are calibrated on the
# carried Gutenberg text (cached under $NWC_CACHE/calib after the first run).
# Runs the points one after the other; --resume keeps the points a previous
# (interrupted) run already wrote. Extra arguments go to `nwc bench embed`.
set -euo pipefail
cd "$(dirname "$0")/.."
export NWC_CACHE="${NWC_CACHE:-$HOME/.cache/nwc}"
export CGO_LDFLAGS="${CGO_LDFLAGS:--L$NWC_CACHE/lib}"
export ONNXRUNTIME_SHARED_LIBRARY_PATH="${ONNXRUNTIME_SHARED_LIBRARY_PATH:-$NWC_CACHE/lib/libonnxruntime.so}"
mkdir -p bin
go build -o bin/nwc ./cmd/nwc
fam=nwc-w128d2
bin/nwc bench embed --model minilm-l6 \
  --run "nwc=$fam-l50-dw32d1,$fam-l100-dw32d1,$fam-l300-dw32d1,$fam-l1000-dw32d1,$fam-l10000-dw32d1" \
  --run ecsq=2.5,3,4,5,6 \
  --run rtn-g128=2,3,4,5,6 \
  --run gptq-g128=2,3,4,5,6 \
  --sentences 1000 --topk 10 --out docs/results --name embed-minilm-l6 "$@"
