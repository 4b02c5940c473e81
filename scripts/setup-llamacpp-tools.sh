#!/usr/bin/env bash
# scripts/setup-llamacpp-tools.sh (`make setup-llamacpp`): llama.cpp's own
# command-line tools (llama-quantize, llama-imatrix, llama-perplexity), built
# from the llama.cpp sources that the PyPI sdist of llama-cpp-python 0.3.16
# vendors (vendor/llama.cpp). They are the peers of docs/results/
# llamacpp-smollm2-135m.md (scripts/run-llamacpp-peers.sh). Not part of
# `make setup` or `make test`: the build takes several minutes on 2 cores.
#
#   ${NWC_CACHE:-$HOME/.cache/nwc}/llamacpp/
#     sdist/llama_cpp_python-0.3.16.tar.gz   (pip download --no-deps --no-binary)
#     tools-0.3.16/bin/llama-{quantize,imatrix,perplexity}
#     tools-0.3.16/.installed                the idempotency stamp
#
# The sdist is pinned by sha256. A second run finds the stamp and the three
# binaries and does nothing (NWC_REBUILD=1 rebuilds).
#
# Env: NWC_CACHE, PYTHON (python with pip, default python3),
#      NWC_LLAMACPP_NATIVE (ON default: -DGGML_NATIVE; OFF for portable builds),
#      NWC_JOBS (default 2)
set -euo pipefail

NWC_CACHE="${NWC_CACHE:-$HOME/.cache/nwc}"
PYTHON="${PYTHON:-python3}"
VER=0.3.16
SDIST_NAME="llama_cpp_python-$VER.tar.gz"
SDIST_SHA256=34ed0f9bd9431af045bb63d9324ae620ad0536653740e9bb163a2e1fcb973be6
NATIVE="${NWC_LLAMACPP_NATIVE:-ON}"
JOBS="${NWC_JOBS:-2}"
BASE="$NWC_CACHE/llamacpp"
SDIST_DIR="$BASE/sdist"
DEST="$BASE/tools-$VER"
TOOLS=(llama-quantize llama-imatrix llama-perplexity)
STAMP="$DEST/.installed"

have_all() {
	[[ -f "$STAMP" ]] || return 1
	local t
	for t in "${TOOLS[@]}"; do [[ -x "$DEST/bin/$t" ]] || return 1; done
}

if [[ "${NWC_REBUILD:-0}" != 1 ]] && have_all; then
	echo "llama.cpp tools present: $DEST/bin ($(tr '\n' ' ' <"$STAMP"))"
	exit 0
fi

for c in cmake tar sha256sum; do
	command -v "$c" >/dev/null || { echo "setup-llamacpp-tools: $c not found (apt-get install cmake build-essential)" >&2; exit 1; }
done

mkdir -p "$SDIST_DIR"
SDIST="$SDIST_DIR/$SDIST_NAME"
if [[ ! -f "$SDIST" ]]; then
	echo "downloading $SDIST_NAME from PyPI"
	"$PYTHON" -m pip download --no-deps --no-binary :all: --dest "$SDIST_DIR" "llama-cpp-python==$VER"
fi
got="$(sha256sum "$SDIST" | cut -d' ' -f1)"
if [[ "$got" != "$SDIST_SHA256" ]]; then
	echo "setup-llamacpp-tools: $SDIST: sha256 $got, want $SDIST_SHA256" >&2
	exit 1
fi

WORK="$(mktemp -d "$BASE/build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
tar -xzf "$SDIST" -C "$WORK" "llama_cpp_python-$VER/vendor/llama.cpp"
SRC="$WORK/llama_cpp_python-$VER/vendor/llama.cpp"
[[ -f "$SRC/CMakeLists.txt" ]] || { echo "setup-llamacpp-tools: $SDIST has no vendor/llama.cpp/CMakeLists.txt" >&2; exit 1; }

nice -n 10 cmake -S "$SRC" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release \
	-DGGML_NATIVE="$NATIVE" -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF \
	-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF
nice -n 10 cmake --build "$WORK/build" --config Release -j "$JOBS" --target "${TOOLS[@]}"

mkdir -p "$DEST/bin"
for t in "${TOOLS[@]}"; do
	install -m 0755 "$WORK/build/bin/$t" "$DEST/bin/$t"
done
{
	echo "llama-cpp-python $VER sdist sha256 $SDIST_SHA256"
	echo "GGML_NATIVE=$NATIVE"
	"$DEST/bin/llama-perplexity" --version 2>&1 | grep -i "built with" || true
} >"$STAMP"
echo "llama.cpp tools installed: $DEST/bin"
