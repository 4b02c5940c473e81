#!/usr/bin/env bash
# scripts/setup-train.sh: the Python environment for codec training only.
#
# Creates ${NWC_CACHE:-$HOME/.cache/nwc}/venv-train with torch, numpy, onnx,
# onnxruntime, safetensors, gguf and matplotlib, all from PyPI (the only Python
# index reachable here). PyPI's Linux x86-64 torch wheel is the CUDA build: it
# pulls several GB of nvidia-* wheels; there is no CPU-only torch on PyPI, and
# `--index-url https://download.pytorch.org/...` is not reachable. That is
# accepted: it also runs on CPU.
#
# Compressing, decompressing and evaluating never need this venv (Go + ONNX
# Runtime only). Idempotent: a second run checks the imports and returns.
#
# Env: NWC_CACHE, PYTHON (default python3, needs >= 3.10), NWC_TRAIN_EXTRA
#      (extra pip requirement specifiers, space-separated).
set -euo pipefail

NWC_CACHE="${NWC_CACHE:-$HOME/.cache/nwc}"
PYTHON="${PYTHON:-python3}"
V="$NWC_CACHE/venv-train"

# The pinned training stack (the versions the shipped codecs were made with).
REQS="$(grep -v '^[[:space:]]*\(#\|$\)' "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/train/requirements.txt")
${NWC_TRAIN_EXTRA:-}"

log() { printf '\033[1m[setup-train]\033[0m %s\n' "$*" >&2; }
die() {
	printf '\033[31m[setup-train] ERROR:\033[0m %s\n' "$*" >&2
	exit 1
}

IMPORTS='import torch, numpy, onnx, onnxruntime, safetensors, gguf, matplotlib'
stamp="$V/.nwc-reqs"

if [[ -x "$V/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$REQS" ]] &&
	"$V/bin/python" -c "$IMPORTS" >/dev/null 2>&1; then
	log "ok: $V"
else
	"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
		die "$PYTHON is older than 3.10"
	if [[ ! -x "$V/bin/python" ]]; then
		log "creating $V"
		"$PYTHON" -m venv "$V" || die "$PYTHON -m venv failed (Debian: apt-get install python3-venv)"
	fi
	printf '%s\n' "$REQS" >"$V/requirements.txt"
	log "pip install (torch from PyPI pulls the CUDA build: several GB, takes a while)"
	"$V/bin/python" -m pip install --upgrade --quiet pip || true
	"$V/bin/python" -m pip install -r "$V/requirements.txt" || die "pip install failed"
	"$V/bin/python" -c "$IMPORTS" || die "imports fail in $V"
	printf '%s' "$REQS" >"$stamp"
	log "installed $V"
fi

"$V/bin/python" - <<'EOF'
import torch, numpy, onnx, onnxruntime, safetensors, gguf, matplotlib
from importlib.metadata import version
print("  torch       ", torch.__version__, "(cuda available: %s)" % torch.cuda.is_available())
print("  numpy       ", numpy.__version__)
print("  onnx        ", onnx.__version__)
print("  onnxruntime ", onnxruntime.__version__, onnxruntime.get_available_providers())
print("  safetensors ", safetensors.__version__)
print("  gguf        ", version("gguf"))
print("  matplotlib  ", matplotlib.__version__)
EOF
echo "  activate: source $V/bin/activate"
