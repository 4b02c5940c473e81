#!/usr/bin/env bash
# check-export.sh [FILE.nwc]: peer checks of `nwc decompress --format gguf|safetensors`
# (issue 10, item 3). Not part of `make test`: the first run compiles llama.cpp.
#
#  1. llama.cpp (PyPI llama-cpp-python, pinned, built from its sdist once and
#     cached under $NWC_CACHE/llamacpp) loads the exported F32 GGUF: its logits on
#     a fixed prompt match our runtime on the .nwc (max relative difference <= 1e-3)
#     and its perplexity on 4 WikiText-2 windows of 2048 agrees with `nwc eval`
#     within 0.5 %. The F16 and Q8_0 exports are loaded too (figures informational), and
#     the GGUF made back from the exported Hugging Face folder (gated like F32).
#  2. transformers' from_pretrained loads the exported Hugging Face folder; its
#     logits match ours (<= 1e-3); `nwc eval` reads the folder back.
# The table goes to stdout and to docs/results/export-<model>.md (OUT=... to change).
#
# FILE.nwc defaults to smollm2-135m compressed with `nwc compress --bits 4`
# (cached as $NWC_CACHE/export-check/smollm2-135m-4.nwc).
# Environment: NWC_CACHE, LLAMA_CPP_PYTHON (default 0.3.16), TRANSFORMERS (4.57.1),
# NWC_TRANSFORMERS_VENV (default $NWC_CACHE/venv-train: torch; transformers is
# installed into it when missing; it has gguf too), THREADS (2), KEEP=1 (keep the work folder).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
export NWC_CACHE=${NWC_CACHE:-$HOME/.cache/nwc}
threads=${THREADS:-2}
llver=${LLAMA_CPP_PYTHON:-0.3.16}
llsha_0_3_16=34ed0f9bd9431af045bb63d9324ae620ad0536653740e9bb163a2e1fcb973be6
tfver=${TRANSFORMERS:-4.57.1}
tvenv=${NWC_TRANSFORMERS_VENV:-$NWC_CACHE/venv-train}
lldir=$NWC_CACHE/llamacpp
lvenv=$lldir/venv-$llver

log() { echo "check-export: $*" >&2; }

# --- llama-cpp-python: sdist from PyPI (sha256-checked), wheel built once and cached.
if ! "$lvenv/bin/python" -c 'import llama_cpp' 2>/dev/null; then
	mkdir -p "$lldir/sdist" "$lldir/wheels"
	sdist=$lldir/sdist/llama_cpp_python-$llver.tar.gz
	if [ ! -f "$sdist" ]; then
		python3 -m venv "$lldir/pipvenv"
		"$lldir/pipvenv/bin/pip" download -q --no-deps --no-binary :all: "llama-cpp-python==$llver" -d "$lldir/sdist"
	fi
	want=$(eval echo "\${llsha_${llver//./_}:-}")
	got=$(sha256sum "$sdist" | cut -d' ' -f1)
	if [ -n "$want" ] && [ "$want" != "$got" ]; then
		log "sha256 mismatch for $sdist: $got, want $want"; exit 1
	fi
	[ -n "$want" ] || log "no pinned sha256 for llama-cpp-python $llver: got $got"
	if ! ls "$lldir/wheels"/llama_cpp_python-"$llver"-*.whl >/dev/null 2>&1; then
		log "building llama-cpp-python $llver (compiles llama.cpp: several minutes on 2 cores)"
		python3 -m venv "$lldir/pipvenv"
		CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF -DGGML_OPENMP=OFF" \
			CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) nice -n 19 "$lldir/pipvenv/bin/pip" wheel -q --no-deps "$sdist" -w "$lldir/wheels"
	fi
	python3 -m venv "$lvenv"
	"$lvenv/bin/pip" install -q "$lldir"/wheels/llama_cpp_python-"$llver"-*.whl numpy typing-extensions diskcache jinja2
fi
# --- transformers in the training venv (torch is there).
if ! "$tvenv/bin/python" -c 'import transformers, torch' 2>/dev/null; then
	[ -x "$tvenv/bin/python" ] || { log "no venv with torch at $tvenv (scripts/setup-train.sh)"; exit 1; }
	nice -n 19 "$tvenv/bin/pip" install -q "transformers==$tfver"
fi

# --- our side.
export CGO_LDFLAGS=${CGO_LDFLAGS:--L$NWC_CACHE/lib}
export ONNXRUNTIME_SHARED_LIBRARY_PATH=${ONNXRUNTIME_SHARED_LIBRARY_PATH:-$NWC_CACHE/lib/libonnxruntime.so}
make -s build
go build -o bin/llamadump ./plugin/llama/cmd/llamadump
nwc=$here/bin/nwc
f=${1:-}
model=smollm2-135m
if [ -z "$f" ]; then
	f=$NWC_CACHE/export-check/smollm2-135m-4.nwc
	if [ ! -f "$f" ]; then
		mkdir -p "$(dirname "$f")"
		log "compressing smollm2-135m at 4 bits into $f"
		"$nwc" compress -q --model smollm2-135m --bits 4 -o "$f"
	fi
else
	model=$(basename "$f" .nwc)
fi
out=${OUT:-docs/results/export-$model.md}
w=$(mktemp -d)
[ -n "${KEEP:-}" ] && log "work folder kept: $w" || trap 'rm -rf "$w"' EXIT

t0=$(date +%s)
for dt in f32 f16 q8_0; do
	"$nwc" decompress -q "$f" --format gguf --dtype $dt -o "$w/$model-$dt.gguf"
done
"$nwc" decompress -q "$f" --format safetensors -o "$w/hf"
"$nwc" decompress -q "$w/hf" --format gguf -o "$w/$model-fromhf.gguf"
log "exported in $(($(date +%s) - t0)) s: $(ls "$w" | tr '\n' ' ')"

"$tvenv/bin/python" scripts/check_export.py ids --hf "$w/hf" --work "$w"
bin/llamadump -model "$f" -tokens "$w/prompt_ids.txt" -out "$w/ours.npy" -threads "$threads"
bin/llamadump -model "$f" -tokens "$w/wiki_ids.txt" -nll -window 2048 -max-windows 4 -threads "$threads" > "$w/ours_nll.txt"
"$nwc" eval -q --model "$f" --max-windows 4 --seq-len 2048 --json > "$w/eval.json"
hf_ppl=$("$nwc" eval -q --model "$w/hf" --max-windows 1 --seq-len 2048 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["perplexity"])')
nwc_ppl1=$("$nwc" eval -q --model "$f" --max-windows 1 --seq-len 2048 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["perplexity"])')
"$lvenv/bin/python" scripts/check_export.py llamacpp --work "$w" --threads "$threads" \
	--gguf "$w/$model-f32.gguf,$w/$model-fromhf.gguf,$w/$model-f16.gguf,$w/$model-q8_0.gguf"
"$tvenv/bin/python" scripts/check_export.py hf --hf "$w/hf" --work "$w" --threads "$threads"
"$tvenv/bin/python" scripts/check_export.py q8 --gguf "$w/$model-f32.gguf,$w/$model-q8_0.gguf" --work "$w"
python3 - "$w/meta.json" <<PY
import json, sys
json.dump({"model": "$model", "nwc": "$(basename "$f")", "nwc_bytes": $(stat -c %s "$f"),
           "date": "$(date -u +%Y-%m-%d)", "commit": "$(git rev-parse --short HEAD)",
           "host": "$(nproc) CPU cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))",
           "hf_eval": $hf_ppl, "nwc_eval_1": $nwc_ppl1}, open(sys.argv[1], "w"))
PY
"$tvenv/bin/python" scripts/check_export.py report --work "$w" --out "$out"
