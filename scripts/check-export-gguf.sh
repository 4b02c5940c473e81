#!/usr/bin/env bash
# check-export-gguf.sh [MODEL]: GGUF export of a GGUF-origin model of any
# architecture (default gemma3-270m: q/k norms, GeGLU, sliding layers),
# checked against llama.cpp. Not part of `make test` (needs
# `make setup-llamacpp`).
#
#  1. `nwc decompress MODEL --format gguf --dtype f32` against llama.cpp's own
#     `llama-quantize --allow-requantize MODEL.gguf F32`: the two files must be
#     byte-identical (same metadata, tensor order, layout and dequantized values).
#  2. MODEL compressed (`nwc compress --codec $CODEC --bits $BITS`), exported
#     to an F32 GGUF and run by llama-perplexity (one chunk of $CTX tokens of
#     WikiText-2, llama.cpp's protocol), next to llama.cpp's F32 of the
#     original: llama.cpp loads and runs what nwc writes.
# Writes docs/results/export-gguf-MODEL.md (OUT=... to change).
# Env: NWC_CACHE, CODEC (rtn-g128), BITS (4), CTX (512), THREADS (2).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-gemma3-270m}
NWC_CACHE=${NWC_CACHE:-$HOME/.cache/nwc}
export NWC_CACHE
CODEC=${CODEC:-rtn-g128}
BITS=${BITS:-4}
CTX=${CTX:-512}
THREADS=${THREADS:-2}
OUT=${OUT:-docs/results/export-gguf-$MODEL.md}
TOOLS="$NWC_CACHE/llamacpp/tools-0.3.16/bin"
NWC=bin/nwc
for f in "$TOOLS/llama-quantize" "$TOOLS/llama-perplexity"; do
	[[ -x "$f" ]] || { echo "check-export-gguf: $f missing (make setup-llamacpp)" >&2 && exit 1; }
done
[[ -x "$NWC" ]] || make build
log() { echo "check-export-gguf: $*" >&2; }

src=$(find "$NWC_CACHE/models/$MODEL" -maxdepth 1 -name '*.gguf' | head -1)
[[ -n "$src" ]] || { echo "check-export-gguf: no GGUF file in $NWC_CACHE/models/$MODEL (make setup)" >&2 && exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/nwc-export-gguf.XXXXXX")
trap 'rm -rf "$work"' EXIT

# 1. byte identity with llama.cpp's F32 of the same file
log "nwc decompress $MODEL --dtype f32; llama-quantize --allow-requantize F32"
"$NWC" decompress "$MODEL" -q --format gguf --dtype f32 -o "$work/nwc-f32.gguf"
"$TOOLS/llama-quantize" --allow-requantize "$src" "$work/llama-f32.gguf" F32 "$THREADS" >"$work/quantize.log" 2>&1
ours=$(sha256sum "$work/nwc-f32.gguf" | cut -d' ' -f1)
theirs=$(sha256sum "$work/llama-f32.gguf" | cut -d' ' -f1)
same=no
cmp -s "$work/nwc-f32.gguf" "$work/llama-f32.gguf" && same=yes

# 2. a compressed model's export, run by llama.cpp
log "nwc compress --codec $CODEC --bits $BITS; export; llama-perplexity"
"$NWC" compress --model "$MODEL" --codec "$CODEC" --bits "$BITS" -q --json -o "$work/m.nwc" >"$work/compress.json"
"$NWC" decompress "$work/m.nwc" -q --format gguf --dtype f32 -o "$work/m-f32.gguf"
python3 - "$work/text.txt" <<'PY'
import sys
d = open("eval/testdata/wikitext-2-raw-test.txt", encoding="utf-8", newline="").read().rstrip("\n")
open(sys.argv[1], "w", encoding="utf-8", newline="").write("\n\n".join(d.split("\n")))
PY
ppl() { # FILE: llama-perplexity's final estimate on one chunk
	"$TOOLS/llama-perplexity" -m "$1" -f "$work/text.txt" -c "$CTX" -b "$CTX" --chunks 1 -t "$THREADS" >"$1.ppl.log" 2>&1 ||
		{ tail -5 "$1.ppl.log" >&2 && echo "check-export-gguf: llama-perplexity failed on $1" >&2 && exit 1; }
	grep -o 'Final estimate: PPL = [0-9.]*' "$1.ppl.log" | awk '{print $5}'
}
p_ref=$(ppl "$work/llama-f32.gguf")
p_nwc=$(ppl "$work/m-f32.gguf")
lbw=$(jq -r '.linear_bits_per_weight' "$work/compress.json")

mkdir -p "$(dirname "$OUT")"
{
	echo "# GGUF export of $MODEL, checked against llama.cpp"
	echo
	echo "Regenerate: \`scripts/check-export-gguf.sh $MODEL\` (llama.cpp from llama-cpp-python 0.3.16's sources, \`make setup-llamacpp\`)."
	echo
	echo "| check | result |"
	echo "|---|---|"
	echo "| \`nwc decompress $MODEL --dtype f32\` vs \`llama-quantize --allow-requantize $(basename "$src") F32\` | byte-identical: **$same** (sha256 $ours / $theirs) |"
	echo "| llama-perplexity, 1 chunk of $CTX, llama.cpp's F32 of the original | PPL $p_ref |"
	echo "| llama-perplexity, 1 chunk of $CTX, nwc's F32 export of \`--codec $CODEC --bits $BITS\` ($(printf %.3f "$lbw") bits/weight) | PPL $p_nwc |"
	echo
	echo "The export copies the source's GGUF metadata entire, general.file_type set to the export's type, and writes the tensors under their own names in their own order: llama.cpp reads it as it reads the original, whatever the architecture."
} >"$OUT"
cat "$OUT"
[[ $same == yes ]] || { echo "check-export-gguf: FAIL: the F32 exports differ" >&2 && exit 1; }
