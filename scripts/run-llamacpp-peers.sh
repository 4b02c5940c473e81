#!/usr/bin/env bash
# scripts/run-llamacpp-peers.sh: llama.cpp's own quantizers as peers of nwc on
# the reference model, in our harness (docs/results/llamacpp-smollm2-135m.md).
#
#   1. the reference (smollm2-135m, Q4_1 GGUF) as an F32 GGUF (nwc decompress)
#   2. llama-imatrix on the carried calibration text
#      (eval/testdata/calibration-gutenberg.txt, the text gptq/ecsq/nwc
#      calibrate on), NWC_PEER_CALIB_CHUNKS windows of 2048 tokens
#   3. llama-quantize to each type, without and with the importance matrix
#      (types that llama.cpp refuses without one are only made with it)
#   4. nwc eval of every file against the reference (mean KL, perplexity,
#      WikiText-2 test text, NWC_PEER_WINDOWS windows of 2048)
#      and the reference points: the Q4_1 file as it is, and
#      `nwc compress --codec lossless` of it
#   5. the table: bits/weight counted as ours (block linears from the GGUF
#      block bytes, every scale included; whole file = file bytes x 8 / all
#      weights), the type every tensor got, KL and perplexity
#      (scripts/llamacpp_peers.py)
#   6. one cross-check of nwc eval against llama-perplexity on the same file
#      and windows (Q4_K_M)
#
# Usage: scripts/run-llamacpp-peers.sh [all|xcheck|table]  (xcheck: step 6
# and the table only; table: the table from what is there)
#
# Every step is cached under $NWC_CACHE/llamacpp/peers (large files; a step
# whose output exists is skipped), so a second run only redoes the table.
# The reference's logits are computed once (nwc eval --reference-cache,
# about 400 MB per window).
# Needs: bin/nwc (make build), the llama.cpp tools (make setup-llamacpp), the
# reference model and venv-check (make setup).
#
# Env: NWC_CACHE, NWC_PEER_WINDOWS (4), NWC_PEER_CALIB_CHUNKS (8),
#      NWC_PEER_TYPES (space-separated llama-quantize types; default below),
#      NWC_PEER_VARIANTS ("imatrix plain"; "plain" skips llama-imatrix),
#      NWC_PEER_XCHECK (Q4_K_M: the file of the cross-check),
#      NWC_PEER_THREADS (2), NWC_PEER_OUT (docs/results),
#      NWC_PEER_NAME (llamacpp-smollm2-135m)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
NWC_CACHE="${NWC_CACHE:-$HOME/.cache/nwc}"
export NWC_CACHE
WIN="${NWC_PEER_WINDOWS:-4}"
CHUNKS="${NWC_PEER_CALIB_CHUNKS:-8}"
THREADS="${NWC_PEER_THREADS:-2}"
OUTDIR="${NWC_PEER_OUT:-docs/results}"
NAME="${NWC_PEER_NAME:-llamacpp-smollm2-135m}"
# Most informative first: the run can be stopped and resumed.
TYPES="${NWC_PEER_TYPES:-Q4_K_M Q2_K Q3_K_S Q3_K_M Q4_K_S IQ4_NL Q4_0 Q4_1 Q5_K_S Q5_K_M Q5_0 Q5_1 Q6_K Q8_0}"
VARIANTS="${NWC_PEER_VARIANTS:-imatrix plain}"
XCHECK="${NWC_PEER_XCHECK:-Q4_K_M}"
TOOLS="$NWC_CACHE/llamacpp/tools-0.3.16/bin"
WORK="$NWC_CACHE/llamacpp/peers"
PY="$NWC_CACHE/venv-check/bin/python"
NWC=bin/nwc
MODEL=smollm2-135m
CALIB=eval/testdata/calibration-gutenberg.txt

for f in "$TOOLS/llama-quantize" "$TOOLS/llama-imatrix" "$TOOLS/llama-perplexity"; do
	[[ -x "$f" ]] || { echo "run-llamacpp-peers: $f missing (make setup-llamacpp)" >&2; exit 1; }
done
[[ -x "$NWC" ]] || { echo "run-llamacpp-peers: $NWC missing (make build)" >&2; exit 1; }
[[ -x "$PY" ]] || { echo "run-llamacpp-peers: $PY missing (make setup-check)" >&2; exit 1; }
mkdir -p "$WORK" "$OUTDIR"
F32="$WORK/smollm2-135m-f32.gguf"
IMAT="$WORK/imatrix.gguf"

log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

MODE="${1:-all}"
case "$MODE" in all | xcheck | table) ;; *) echo "usage: $0 [all|xcheck|table]" >&2; exit 2 ;; esac

run_quantize() {
# 1. F32 GGUF of the reference.
if [[ ! -s "$F32" ]]; then
	log "F32 GGUF of $MODEL"
	"$NWC" decompress "$MODEL" --format gguf --dtype f32 -o "$F32.tmp.gguf" -q
	mv "$F32.tmp.gguf" "$F32"
fi

# 2. Importance matrix on the calibration text.
if [[ " $VARIANTS " == *" imatrix "* && ! -s "$IMAT" ]]; then
	log "llama-imatrix: $CHUNKS x 2048 tokens of $CALIB"
	nice -n 5 "$TOOLS/llama-imatrix" -m "$F32" -f "$CALIB" -c 2048 -b 2048 --chunks "$CHUNKS" \
		-t "$THREADS" --no-ppl -o "$IMAT.tmp.gguf" >"$WORK/imatrix.log" 2>&1
	mv "$IMAT.tmp.gguf" "$IMAT"
fi

# Reference points: the Q4_1 file as it is (its perplexity on the same
# windows), and nwc's lossless codec on it (block-split of the Q4_1 codes).
if [[ ! -s "$WORK/reference.eval-w$WIN.json" ]]; then
	log "nwc eval $MODEL ($WIN windows)"
	nice -n 5 "$NWC" eval --model "$MODEL" --max-windows "$WIN" --threads "$THREADS" --json -q >"$WORK/reference.eval-w$WIN.json.tmp"
	mv "$WORK/reference.eval-w$WIN.json.tmp" "$WORK/reference.eval-w$WIN.json"
fi
if [[ ! -s "$WORK/ref-lossless.inspect.json" ]]; then
	log "nwc compress --codec lossless $MODEL"
	"$NWC" compress "$MODEL" --codec lossless -o "$WORK/ref-lossless.nwc" -q
	"$NWC" inspect "$WORK/ref-lossless.nwc" --verify | tail -n 2 >&2
	"$NWC" inspect "$WORK/ref-lossless.nwc" --json >"$WORK/ref-lossless.inspect.json"
fi

# 3+4. Quantize and evaluate; variants with the importance matrix first.
for variant in $VARIANTS; do
	for t in $TYPES; do
		name="$t"
		args=()
		if [[ "$variant" == imatrix ]]; then
			name="$t-imatrix"
			args=(--imatrix "$IMAT")
		fi
		q="$WORK/$name.gguf"
		if [[ ! -s "$q" && ! -e "$WORK/$name.failed" ]]; then
			log "llama-quantize $name"
			if nice -n 5 "$TOOLS/llama-quantize" "${args[@]}" "$F32" "$q.tmp.gguf" "$t" "$THREADS" >"$WORK/$name.quantize.log" 2>&1; then
				mv "$q.tmp.gguf" "$q"
			else
				rm -f "$q.tmp.gguf"
				tail -n 3 "$WORK/$name.quantize.log" >"$WORK/$name.failed"
				log "  $name refused: $(tr '\n' ' ' <"$WORK/$name.failed")"
			fi
		fi
		ev="$WORK/$name.eval-w$WIN.json"
		if [[ -s "$q" && ! -s "$ev" ]]; then
			log "nwc eval $name ($WIN windows)"
			nice -n 5 "$NWC" eval --model "$q" --reference "$MODEL" --reference-cache "$WORK/reference-logits" \
				--max-windows "$WIN" --threads "$THREADS" --json -q >"$ev.tmp"
			mv "$ev.tmp" "$ev"
		fi
	done
done

}

run_xcheck() {
# 6. Cross-check against llama-perplexity (one file, NWC_PEER_XCHECK):
# the same text (rows joined with "\n\n", as nwc eval tokenizes it), the same
# 2048-token windows (no BOS: the model's add_bos_token is false).
XQ="$WORK/$XCHECK.gguf"
JOINED="$WORK/wikitext-2-raw-test.joined.txt"
"$PY" - "$JOINED" <<'PYEOF'
import sys
d = open("eval/testdata/wikitext-2-raw-test.txt", encoding="utf-8", newline="").read()
if d.endswith("\n"):
    d = d[:-1]
open(sys.argv[1], "w", encoding="utf-8", newline="").write("\n\n".join(d.split("\n")))
PYEOF
if [[ -s "$XQ" ]]; then
	# (a) llama-perplexity's own protocol: chunks of 2048, only the second
	# half of each scored; nwc eval --score-from 1024 scores the same
	# predictions.
	if [[ ! -s "$WORK/xcheck-llama-half.log" ]]; then
		log "llama-perplexity (second halves, $WIN chunks)"
		nice -n 5 "$TOOLS/llama-perplexity" -m "$XQ" -f "$JOINED" -c 2048 -b 2048 --chunks "$WIN" -t "$THREADS" \
			>"$WORK/xcheck-llama-half.log.tmp" 2>&1
		mv "$WORK/xcheck-llama-half.log.tmp" "$WORK/xcheck-llama-half.log"
	fi
	if [[ ! -s "$WORK/xcheck-nwc-half.json" ]]; then
		log "nwc eval --score-from 1024"
		nice -n 5 "$NWC" eval --model "$XQ" --max-windows "$WIN" --score-from 1024 --threads "$THREADS" --json -q \
			>"$WORK/xcheck-nwc-half.json.tmp"
		mv "$WORK/xcheck-nwc-half.json.tmp" "$WORK/xcheck-nwc-half.json"
	fi
	# (b) every prediction of the first window: strided mode. llama-perplexity
	# widens the context to c + stride/2 in that mode (perplexity.cpp main)
	# and scores positions n_ctx-stride-1 .. n_ctx-2; -c 1025 with stride
	# 2047 gives n_ctx 2048 and positions 0..2046 of chunk 0 = tokens 0..2047.
	# (The log's name says which: an older -c 2048 run scored tokens 1024..3070.)
	if [[ ! -s "$WORK/xcheck-llama-full1-c1025.log" ]]; then
		log "llama-perplexity (strided, window 0 whole)"
		nice -n 5 "$TOOLS/llama-perplexity" -m "$XQ" -f "$JOINED" -c 1025 -b 2048 --ppl-stride 2047 --chunks 1 -t "$THREADS" \
			>"$WORK/xcheck-llama-full1-c1025.log.tmp" 2>&1
		mv "$WORK/xcheck-llama-full1-c1025.log.tmp" "$WORK/xcheck-llama-full1-c1025.log"
	fi
	if [[ ! -s "$WORK/xcheck-nwc-full1.json" ]]; then
		log "nwc eval --max-windows 1"
		nice -n 5 "$NWC" eval --model "$XQ" --max-windows 1 --threads "$THREADS" --json -q >"$WORK/xcheck-nwc-full1.json.tmp"
		mv "$WORK/xcheck-nwc-full1.json.tmp" "$WORK/xcheck-nwc-full1.json"
	fi
fi

}

[[ "$MODE" == all ]] && run_quantize
[[ "$MODE" == all || "$MODE" == xcheck ]] && run_xcheck

# 5. The table.
"$PY" scripts/llamacpp_peers.py --work "$WORK" --xcheck "$XCHECK" --windows "$WIN" --calib-chunks "$CHUNKS" --types "$TYPES" \
	--reference "$NWC_CACHE/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf" \
	--out "$OUTDIR/$NAME"
log "wrote $OUTDIR/$NAME.md and .json"
