#!/usr/bin/env bash
# scripts/gen_onnx_proto.sh: regenerate plugin/onnx/onnxpb/onnx.pb.go from the
# ONNX protobuf schema.
#
# Sources (registries only):
#   - onnx.proto from the PyPI wheel onnx==1.23.2 (cp311 manylinux, sha256 pinned),
#     copied to plugin/onnx/onnxpb/onnx.proto (Apache-2.0, the ONNX project);
#   - protoc from Debian's protobuf-compiler (3.21.x);
#   - protoc-gen-go from the Go module proxy, the same version as
#     google.golang.org/protobuf in go.mod.
#
# Usage: bash scripts/gen_onnx_proto.sh        (from anywhere inside the repo)
#   ONNX_PROTO=path/to/onnx.proto  use that schema instead of downloading the wheel.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/plugin/onnx/onnxpb"
ONNX_VER=1.23.2
WHEEL=onnx-1.23.2-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl
WHEEL_SHA=c03ecf6b835d136108eeaeeafbd0026fc7b3cf98661409fbc6b63d5a29361348
PB_VER="$(cd "$ROOT" && go list -m -f '{{.Version}}' google.golang.org/protobuf)"

log() { printf '[gen_onnx_proto] %s\n' "$*" >&2; }

if ! command -v protoc >/dev/null; then
	log "installing protobuf-compiler (Debian)"
	apt-get update -qq && apt-get install -y -qq protobuf-compiler
fi
GOBIN="$(go env GOPATH)/bin"
if [[ ! -x "$GOBIN/protoc-gen-go" ]] || [[ "$("$GOBIN/protoc-gen-go" --version 2>/dev/null)" != "protoc-gen-go $PB_VER" ]]; then
	log "go install google.golang.org/protobuf/cmd/protoc-gen-go@$PB_VER"
	(cd "$ROOT" && go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PB_VER")
fi

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
if [[ -n "${ONNX_PROTO:-}" ]]; then
	cp "$ONNX_PROTO" "$TMP/onnx.proto"
else
	log "pip download onnx==$ONNX_VER"
	python3 -m pip download --quiet --no-deps --only-binary=:all: \
		--platform manylinux_2_28_x86_64 --python-version 3.11 \
		"onnx==$ONNX_VER" -d "$TMP"
	echo "$WHEEL_SHA  $TMP/$WHEEL" | sha256sum -c --quiet -
	python3 - "$TMP/$WHEEL" "$TMP/onnx.proto" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    open(sys.argv[2], "wb").write(z.read("onnx/onnx.proto"))
PY
fi
cp "$TMP/onnx.proto" "$OUT/onnx.proto"

log "protoc $(protoc --version)"
(cd "$OUT" && PATH="$GOBIN:$PATH" protoc --proto_path=. \
	--go_out=. --go_opt=paths=source_relative \
	--go_opt=Monnx.proto=github.com/nwc-project/nwc/plugin/onnx/onnxpb \
	onnx.proto)
log "wrote $OUT/onnx.pb.go"
