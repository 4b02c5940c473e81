# Sourced by the resumable measurement scripts (run-calib-protocol.sh,
# run-ablation.sh). compress_eval NAME [compress flags...]: compresses
# $MODEL into $OUT/NAME.nwc with the flags (summary in NAME.compress.json),
# then evaluates it against $MODEL on $WINDOWS windows (NAME.eval.json). A
# step whose JSON is already there is skipped; each is written under .tmp
# and renamed, so a cut-short run resumes cleanly. Needs NWC, MODEL, OUT,
# WINDOWS.
compress_eval() {
	local name=$1
	shift
	if [ ! -s "$OUT/$name.compress.json" ]; then
		echo "== compress $name ($(date -u +%T))" >&2
		nice "$NWC" compress --model "$MODEL" "$@" -q --json -o "$OUT/$name.nwc" >"$OUT/$name.compress.json.tmp"
		mv "$OUT/$name.compress.json.tmp" "$OUT/$name.compress.json"
	fi
	if [ ! -s "$OUT/$name.eval.json" ]; then
		echo "== eval $name ($(date -u +%T))" >&2
		nice "$NWC" eval --model "$OUT/$name.nwc" --reference "$MODEL" --max-windows "$WINDOWS" -q --json >"$OUT/$name.eval.json.tmp"
		mv "$OUT/$name.eval.json.tmp" "$OUT/$name.eval.json"
	fi
}
