#!/usr/bin/env bash
# Builds the README's Go example (between the api-example markers) in a fresh
# module outside the repository that requires this one (through a replace
# directive to this checkout), and runs it on FILE, a .nwc file.
#
#   scripts/check-api-example.sh s4.nwc
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
file="${1:?usage: check-api-example.sh FILE.nwc}"
file="$(cd "$(dirname "$file")" && pwd)/$(basename "$file")"
export NWC_CACHE="${NWC_CACHE:-$HOME/.cache/nwc}"
export ONNXRUNTIME_SHARED_LIBRARY_PATH="${ONNXRUNTIME_SHARED_LIBRARY_PATH:-$NWC_CACHE/lib/libonnxruntime.so}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
awk '/<!-- api-example/{f=1; next} /<!-- \/api-example/{f=0} f' "$repo/README.md" | sed '/^```/d' > "$work/main.go"
cd "$work"
go mod init example.com/nwcuser >/dev/null 2>&1
go mod edit -require github.com/nwc-project/nwc@v0.0.0 -replace "github.com/nwc-project/nwc=$repo"
go mod tidy >/dev/null
echo "== fresh module $work (go.mod requires github.com/nwc-project/nwc, replaced by $repo)"
go build -o example .
echo "== built; running on $file"
/usr/bin/time -f "== %e s wall, %M KB max RSS" ./example "$file"
