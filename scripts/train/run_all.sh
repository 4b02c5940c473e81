#!/usr/bin/env bash
# scripts/train/run_all.sh: reproduce one shipped codec from scratch
# (dataset -> train -> export -> ONNX Runtime parity check).
#
#   scripts/train/run_all.sh                 # nwc-w128d2-l300 (see docs/TRAINING.md)
#   LAMBDA=1000 scripts/train/run_all.sh     # another rate point
#   ARCH=gain LAMBDA=300 scripts/train/run_all.sh   # network-free floor codec nwc-gain-l300
#   WIDTH=32 DEPTH=1 LAMBDA=300 scripts/train/run_all.sh   # nwc-w32d1-l300
#   STEPS=6000 NAME_SUFFIX=-s6k LAMBDA=100 scripts/train/run_all.sh
#                                            # trained 4x longer: nwc-w128d2-l100-s6k (issue 13 ablation)
#   PARENT=models/nwc-w128d2-l300 WIDTH=32 DEPTH=1 scripts/train/run_all.sh
#                                            # distilled decoder nwc-w128d2-l300-dw32d1
#   scripts/train/run_all.sh --tiny          # CI: tiny dataset, 30 steps, exported to
#                                            # $NWC_CACHE/train-runs/nwc-tiny/export (< 1 min)
# Env: NWC_CACHE (default ~/.cache/nwc), PY (python of the training venv; default
#      $NWC_CACHE/venv-train/bin/python, else /tmp/venv-train/bin/python),
#      ARCH (mlp|gain), PARENT (distill a decoder for that codec folder),
#      WIDTH DEPTH LAMBDA STEPS BATCH THREADS, NAME_SUFFIX (appended to the run name), OUT (export folder, default models/<name>),
#      LOGDIR (training CSV/PNG, default docs/results/training).
set -euo pipefail
cd "$(dirname "$0")/../.."
NWC_CACHE="${NWC_CACHE:-$HOME/.cache/nwc}"
export NWC_CACHE
if [[ -z "${PY:-}" ]]; then
	PY="$NWC_CACHE/venv-train/bin/python"
	[[ -x "$PY" ]] || PY=/tmp/venv-train/bin/python
fi
[[ -x "$PY" ]] || { echo "no training venv: run make setup-train (or set PY)" >&2; exit 1; }

ARCH="${ARCH:-mlp}" PARENT="${PARENT:-}"
if [[ -n "$PARENT" ]]; then
	WIDTH="${WIDTH:-32}" DEPTH="${DEPTH:-1}"
fi
WIDTH="${WIDTH:-128}" DEPTH="${DEPTH:-2}" LAMBDA="${LAMBDA:-300}"
STEPS="${STEPS:-1500}" BATCH="${BATCH:-64}" THREADS="${THREADS:-1}"
start=$(date +%s)
if [[ "${1:-}" == "--tiny" ]]; then
	"$PY" scripts/train/dataset.py --tiny
	"$PY" scripts/train/train.py --tiny --threads "$THREADS"
	OUT="${OUT:-$NWC_CACHE/train-runs/nwc-tiny/export}"
	"$PY" scripts/train/export.py --run nwc-tiny --out "$OUT" --parity-chunks 256 --rans-chunks 256 --max-val-chunks 8192
	"$PY" scripts/train/evaluate.py "$OUT"
elif [[ -n "$PARENT" ]]; then
	NAME="$(basename "$PARENT")-dw${WIDTH}d${DEPTH}"
	"$PY" scripts/train/dataset.py
	OUT="${OUT:-models/$NAME}"
	"$PY" scripts/train/distill.py --parent "$PARENT" --width "$WIDTH" --depth "$DEPTH" --steps "$STEPS" \
		--batch "$BATCH" --threads "$THREADS" --out "$OUT" ${LOGDIR:+--logdir "$LOGDIR"}
	"$PY" scripts/train/evaluate.py "$OUT"
else
	NAME="nwc-w${WIDTH}d${DEPTH}-l${LAMBDA}${NAME_SUFFIX:-}"
	[[ "$ARCH" == gain ]] && NAME="nwc-gain-l${LAMBDA}${NAME_SUFFIX:-}"
	"$PY" scripts/train/dataset.py
	"$PY" scripts/train/train.py --arch "$ARCH" --name "$NAME" --width "$WIDTH" --depth "$DEPTH" --lmbda "$LAMBDA" \
		--steps "$STEPS" --batch "$BATCH" --threads "$THREADS" --resume ${LOGDIR:+--logdir "$LOGDIR"}
	OUT="${OUT:-models/$NAME}"
	"$PY" scripts/train/export.py --run "$NAME" --out "$OUT" --threads "$THREADS"
	"$PY" scripts/train/evaluate.py "$OUT"
fi
echo "run_all: done in $(($(date +%s) - start)) s -> $OUT" >&2
