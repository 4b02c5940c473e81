#!/usr/bin/env bash
# check-big-model.sh: a Llama whose float32 weights exceed 3 GB (over
# protobuf's 2 GB limit for an ONNX model with embedded weights) is made,
# compressed, loaded and run by nwc. Not part of `make test`: it writes about
# 3.3 GB (GGUF) + the .nwc to $WORK and needs ~8 GB of RAM.
#
#   scripts/check-big-model.sh            # default codec (nwc), 4 bits
#   CODEC=rtn-g128 scripts/check-big-model.sh   # faster compress on small machines
#
# Env: WORK (default: a temporary folder, removed at the end unless KEEP=1),
# CODEC (default nwc), LAYERS (default 14), PY (python with numpy + gguf:
# $NWC_CACHE/venv-check/bin/python), NWC_BIN (default bin/nwc; built when
# missing). Prints peak RSS (/usr/bin/time -v) and wall time of each step.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
NWC_CACHE=${NWC_CACHE:-$HOME/.cache/nwc}
export NWC_CACHE
PY=${PY:-$NWC_CACHE/venv-check/bin/python}
nwc=${NWC_BIN:-$here/bin/nwc}
CODEC=${CODEC:-nwc}
LAYERS=${LAYERS:-14}
ref=$NWC_CACHE/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$ref" ] || { echo "missing $ref (run make setup)" >&2; exit 1; }
[ -x "$nwc" ] || (cd "$here" && CGO_LDFLAGS="-L$NWC_CACHE/lib" go build -o "$nwc" ./cmd/nwc)
export ONNXRUNTIME_SHARED_LIBRARY_PATH=${ONNXRUNTIME_SHARED_LIBRARY_PATH:-$NWC_CACHE/lib/libonnxruntime.so}
if [ -z "${WORK:-}" ]; then
	WORK=$(mktemp -d)
	[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$WORK"' EXIT
fi
mkdir -p "$WORK"

# step NAME CMD...: run CMD under /usr/bin/time -v, print its output tail,
# wall time and peak RSS.
step() {
	local name=$1
	shift
	echo "== $name: $*"
	/usr/bin/time -v -o "$WORK/time.txt" "$@" > "$WORK/out.txt" 2>&1 || { cat "$WORK/out.txt" "$WORK/time.txt"; exit 1; }
	tail -n 4 "$WORK/out.txt"
	awk -F': ' -v n="$name" '/Elapsed \(wall clock\)/{w=$2} /Maximum resident set size/{r=$2}
		END{printf "   %s: wall %s, peak RSS %.2f GB\n", n, w, r*1024/1e9}' "$WORK/time.txt"
}

echo "nwc $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo ?); $(nproc) cores, $(awk '/MemTotal/{printf "%.1f GB", $2*1024/1e9}' /proc/meminfo) RAM; codec $CODEC"
step make "$PY" "$here/scripts/check-big-model.py" --tokenizer-from "$ref" --out "$WORK/big.gguf" --layers "$LAYERS"
echo "   big.gguf: $(stat -c %s "$WORK/big.gguf") bytes"
step compress "$nwc" compress -q --model "$WORK/big.gguf" --codec "$CODEC" --bits 4 --no-calib -o "$WORK/big.nwc"
echo "   big.nwc: $(stat -c %s "$WORK/big.nwc") bytes"
step generate-gguf "$nwc" generate --model "$WORK/big.gguf" --prompt "The capital of France is" --max-tokens 8 --ignore-eos --threads 2
step generate-nwc "$nwc" generate --model "$WORK/big.nwc" --prompt "The capital of France is" --max-tokens 8 --ignore-eos --threads 2
step eval-nwc "$nwc" eval -q --model "$WORK/big.nwc" --max-windows 1 --seq-len 128
echo "ok"
