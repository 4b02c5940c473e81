#!/usr/bin/env bash
# The final table of issue 13 (docs/results/final-$MODEL.{md,json,png}): one
# point near 3 and one near 4 bits/weight per method, each evaluated on the
# whole WikiText-2 test text (every window of 2048 tokens), KL against the
# reference model, plus the RD plot with every method and the two lossless
# reference points (the Q4_1 file as it is, and its block codes entropy-coded).
#
#   scripts/run-final-table.sh          # resume: measure what is missing, then report
#   REPORT_ONLY=1 scripts/run-final-table.sh
#
# Points (POINTS; name -> `nwc compress` flags), each method in its best
# calibration protocol measured in docs/results/calib-protocol-*.md:
#   nwc-3, nwc-4            --codec nwc --bits 3|4, one-pass, $TOKENS tokens
#   ecsq-levels-3, -4       --codec ecsq:levels --tune-row-scales at the rate nwc
#                           reached (nwc's importance levels, one step per level; the
#                           row-scale refit pays for ECSQ: docs/results/ablation-*), one-pass
#   gptq-3, gptq-4          --codec gptq-g128 --bits 3|4, sequential ($SEQ_TOKENS tokens)
#   rtn-3, rtn-4            --codec rtn-g128 --bits 3|4 (no calibration)
#   gguf:Q2_K-imatrix, gguf:IQ4_NL-imatrix  llama.cpp with its importance matrix: the
#                           lowest rate it reaches on this model (4.23) and the best type near it
#   gguf:NAME               a GGUF file made by llama.cpp (scripts/run-llamacpp-peers.sh)
#                           at $LLAMACPP_DIR/NAME.gguf (NAME: Q2_K-imatrix, IQ4_NL-imatrix,
#                           ...), evaluated as it is; its rates come from that script's
#                           table (docs/results/llamacpp-$MODEL.json)
#
# The evaluation is split into ranges of $CHUNK windows (`nwc eval
# --first-window`); each range's result is committed under $PARTS, with the
# sha256 of the file evaluated, so the run resumes across machines and
# sessions: a part is only merged with parts of the same file (compression
# is deterministic; a changed file is an error, never silently mixed). The
# reference's logits of the current range (and each row's log-sum-exp) are
# cached on disk (--reference-cache, ~400 MB per window) and deleted once
# every point has that range. Needs: bin/nwc (make build), the smollm2-135m reference (make
# setup), the training venv for the plot (make setup-train).
set -euo pipefail
cd "$(dirname "$0")/.."
NWC=${NWC:-bin/nwc}
MODEL=${MODEL:-smollm2-135m}
TOKENS=${TOKENS:-65536}
SEQ_TOKENS=${SEQ_TOKENS:-16384}
CHUNK=${CHUNK:-21}
OUT=${OUT:-out/final-$MODEL}
PARTS=${PARTS:-docs/results/final-$MODEL}
RESULTS=${RESULTS:-docs/results}
NWC_CACHE=${NWC_CACHE:-$HOME/.cache/nwc}
LLAMACPP_DIR=${LLAMACPP_DIR:-$NWC_CACHE/llamacpp/peers}
POINTS=${POINTS:-"nwc-3 nwc-4 ecsq-levels-3 ecsq-levels-4 gptq-3 gptq-4 rtn-3 rtn-4 gguf:Q2_K-imatrix gguf:IQ4_NL-imatrix"}
REFCACHE=${REFCACHE:-$NWC_CACHE/final-refcache}
mkdir -p "$OUT" "$PARTS"
[[ -x "$NWC" ]] || make build

# linear rate nwc reached at BITS (the ecsq targets)
nwc_rate() {
	python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["linear_bits_per_weight"], 3))' "$PARTS/nwc-$1.compress.json"
}

file_sha() { sha256sum "$1" | cut -d' ' -f1; }

# install_summary POINT NEW DEST: copies the summary NEW to DEST (committed
# with the parts), refusing when DEST names another file than NEW does.
install_summary() {
	if [[ -s "$3" ]] && ! cmp -s <(jq -r .sha256 "$3") <(jq -r .sha256 "$2"); then
		echo "run-final-table.sh: $1: the file differs from the one the committed parts were measured on ($3); move those parts away to measure again" >&2
		exit 1
	fi
	cp "$2" "$3"
}

# compress_point NAME: makes $OUT/NAME.nwc (and $PARTS/NAME.compress.json)
compress_point() {
	local name=$1 args
	case $name in
	nwc-3 | nwc-4) args=(--codec nwc --bits "${name#nwc-}" --calib-tokens "$TOKENS") ;;
	ecsq-levels-3 | ecsq-levels-4)
		local b=${name#ecsq-levels-}
		[[ -s "$PARTS/nwc-$b.compress.json" ]] || compress_point "nwc-$b"
		args=(--codec ecsq:levels --bits "$(nwc_rate "$b")" --calib-tokens "$TOKENS" --tune-row-scales)
		;;
	gptq-3 | gptq-4) args=(--codec gptq-g128 --bits "${name#gptq-}" --calib sequential --calib-tokens "$SEQ_TOKENS") ;;
	rtn-3 | rtn-4) args=(--codec rtn-g128 --bits "${name#rtn-}") ;;
	*) echo "run-final-table.sh: unknown point $name" >&2 && exit 2 ;;
	esac
	if [[ ! -s "$OUT/$name.nwc" ]]; then
		echo "== compress $name ($(date -u +%T)): ${args[*]}" >&2
		nice "$NWC" compress --model "$MODEL" "${args[@]}" -q --json -o "$OUT/$name.nwc.tmp" >"$OUT/$name.compress.json.tmp"
		mv "$OUT/$name.nwc.tmp" "$OUT/$name.nwc"
		python3 - "$OUT/$name.compress.json.tmp" "$(file_sha "$OUT/$name.nwc")" "${args[*]}" >"$OUT/$name.compress.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
keep = {k: c[k] for k in ("codec", "bits_per_weight", "linear_bits_per_weight", "file_bytes", "calibration") if k in c}
keep.update(flags=sys.argv[3], sha256=sys.argv[2])
json.dump(keep, sys.stdout, indent=2)
PY
		rm "$OUT/$name.compress.json.tmp"
		install_summary "$name" "$OUT/$name.compress.json" "$PARTS/$name.compress.json"
	fi
}

# gguf_summary NAME: $PARTS/gguf-NAME.compress.json from the llama.cpp table
gguf_summary() {
	local n=${1#gguf:} f
	f=$(model_path "$1")
	local s="$PARTS/gguf-$n.compress.json"
	python3 - "$RESULTS/llamacpp-$MODEL.json" "$n" "$(file_sha "$f")" >"$s.tmp" <<'PY'
import json, sys
rows = [r for r in json.load(open(sys.argv[1]))["rows"] if r["name"] == sys.argv[2]]
if not rows:
    sys.exit(f"run-final-table.sh: {sys.argv[2]} is not in {sys.argv[1]}")
r = rows[0]
json.dump({"codec": f"llama.cpp {r['type']}" + (" + imatrix" if r["imatrix"] else ""),
           "bits_per_weight": r["file_bits_per_weight"], "linear_bits_per_weight": r["linear_bits_per_weight"],
           "flags": f"llama-quantize {'--imatrix imatrix.gguf ' if r['imatrix'] else ''}F32 {r['type']}",
           "sha256": sys.argv[3]}, sys.stdout, indent=2)
PY
	install_summary "$1" "$s.tmp" "$s"
	rm "$s.tmp"
}

# model_path NAME: the file evaluated for a point
model_path() {
	case $1 in
	gguf:*) echo "$LLAMACPP_DIR/${1#gguf:}.gguf" ;;
	*) echo "$OUT/$1.nwc" ;;
	esac
}

part_name() { echo "${1/:/-}.w$(printf %03d "$2").json"; }

if [[ -z "${REPORT_ONLY:-}" ]]; then
	total=$("$NWC" eval --model "$MODEL" --max-windows 1 -q --json | jq '(.text_tokens / .seq_len) | floor')
	for ((first = 0; first < total; first += CHUNK)); do
		ran=
		for p in $POINTS; do
			part="$PARTS/$(part_name "$p" "$first")"
			[[ -s "$part" ]] && continue
			ran=1
			f=$(model_path "$p")
			if [[ $p == gguf:* ]]; then
				[[ -s "$f" ]] || { echo "run-final-table.sh: $f missing (scripts/run-llamacpp-peers.sh)" >&2 && exit 1; }
				gguf_summary "$p"
			else
				compress_point "$p"
			fi
			echo "== eval $p windows $first.. ($(date -u +%T))" >&2
			nice "$NWC" eval --model "$f" --reference "$MODEL" --first-window "$first" --max-windows "$CHUNK" \
				--reference-cache "$REFCACHE" -q --json >"$part.tmp"
			jq --arg sha "$(file_sha "$f")" '. + {file_sha256: $sha}' "$part.tmp" >"$part.tmp2"
			rm "$part.tmp" && mv "$part.tmp2" "$part"
		done
		# this range is done for every point (a range done before keeps the
		# cache, which may hold the next range's reference, from an earlier run)
		[[ -z $ran ]] || rm -rf "$REFCACHE"
	done
fi

PY=python3
[[ -x "$NWC_CACHE/venv-train/bin/python" ]] && PY="$NWC_CACHE/venv-train/bin/python"
MODEL="$MODEL" PARTS="$PARTS" RESULTS="$RESULTS" POINTS="$POINTS" "$PY" scripts/final_table.py
