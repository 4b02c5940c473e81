#!/usr/bin/env bash
# check-decode.sh FILE.nwc: the decode-path checks of issue 5 on a real file.
#  1. nwc decompress twice: the two safetensors files are byte-identical;
#  2. the decompressed tensors equal the decoded .nwc tensors (float32 digests);
#  3. the weights the runtime is built with by nwc eval equal them too;
#  4. one byte corrupted in every section: the loader names the tensor
#     (go test ./loader -run TestRealFileCorruption with NWC_TEST_FILE).
set -euo pipefail
f=${1:?usage: scripts/check-decode.sh FILE.nwc}
here=$(cd "$(dirname "$0")/.." && pwd)
nwc=${NWC_BIN:-$here/bin/nwc}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
t0=$(date +%s.%N)
"$nwc" decompress -q "$f" -o "$tmp/a.safetensors"
t1=$(date +%s.%N)
"$nwc" decompress -q "$f" -o "$tmp/b.safetensors"
cmp "$tmp/a.safetensors" "$tmp/b.safetensors"
echo "decompress twice: identical ($(stat -c %s "$tmp/a.safetensors") bytes, sha256 $(sha256sum < "$tmp/a.safetensors" | cut -c1-16)...; first decompress $(awk "BEGIN{printf \"%.1f\", $t1 - $t0}") s)"
d_nwc=$("$nwc" inspect --digest --json "$f" | python3 -c 'import json,sys; print(json.load(sys.stdin)["weights_sha256"])')
d_st=$("$nwc" inspect --digest --json "$tmp/a.safetensors" | python3 -c 'import json,sys; print(json.load(sys.stdin)["weights_sha256"])')
d_ev=$("$nwc" eval --model "$f" --digest --max-windows 1 --seq-len 64 --json -q | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["weights_sha256"], r["weights_hashed"])')
echo "weights sha256: .nwc decoded $d_nwc"
echo "                safetensors  $d_st"
echo "                eval runtime ${d_ev% *} (${d_ev#* } tensors)"
[ "$d_nwc" = "$d_st" ] && [ "$d_nwc" = "${d_ev% *}" ] || { echo "MISMATCH" >&2; exit 1; }
echo "all equal"
cd "$here"
NWC_TEST_FILE=$(realpath "$f") go test ./loader -run TestRealFileCorruption -count=1 -v 2>&1 | grep -E "^(---|===|ok|FAIL|\s+real)" || true
