#!/usr/bin/env bash
# scripts/gpu-bench.sh: every GPU measurement of nwc in one short script
# (under 10 minutes), written to docs/results/gpu-*.{json,md}
# (docs/GPU.md says what each figure means).
#
#   scripts/gpu-bench.sh run       on the GPU host: nvidia-smi facts, `make
#                                  setup-cuda`, CPU vs CUDA agreement
#                                  (decoder networks, .nwc files), decoder
#                                  throughput per codec x batch x sessions
#   scripts/gpu-bench.sh prepare   on a machine with Go and PyPI, for a GPU
#                                  host that has neither: builds the test
#                                  binary and nwc into .gpu/bin, and puts the
#                                  pinned onnxruntime-gpu wheel into
#                                  .gpu/parts in pieces of < 48 MiB (ignored
#                                  by git; see docs/GPU.md for carrying them)
#   scripts/gpu-bench.sh stage     on the GPU host: moves the carried
#                                  .gpu/parts/* into $NWC_GPU_STAGE
#
# Env: NWC_CACHE; NWC_CUDA_FLAVOR / NWC_CUDA_LIBS (scripts/setup-cuda.sh);
#      NWC_GPU_STAGE (default /tmp/nwc-gpu-stage); RESULTS (default
#      docs/results, or $OUT/... when OUT is set); NWC_BENCH_BATCHES,
#      NWC_BENCH_SESSIONS, NWC_BENCH_CODECS (ortcodec/cuda_test.go);
#      BENCHTIME (go test -benchtime, default 3x).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export NWC_CACHE="${NWC_CACHE:-$HOME/.cache/nwc}"
STAGE="${NWC_GPU_STAGE:-/tmp/nwc-gpu-stage}"
RESULTS="${RESULTS:-${OUT:-docs/results}}"
BENCHTIME="${BENCHTIME:-3x}"
STAMP="$(date -u +%Y%m%d)"

log() { printf '\033[1m[gpu-bench]\033[0m %s\n' "$*" >&2; }
die() {
	printf '\033[31m[gpu-bench] ERROR:\033[0m %s\n' "$*" >&2
	exit 1
}

prepare() {
	command -v go >/dev/null || die "prepare needs Go"
	grep -qx '/.gpu/' "$(git rev-parse --git-common-dir)/info/exclude" 2>/dev/null ||
		echo '/.gpu/' >>"$(git rev-parse --git-common-dir)/info/exclude"
	mkdir -p .gpu/bin .gpu/parts
	export CGO_LDFLAGS="${CGO_LDFLAGS:--L$NWC_CACHE/lib}"
	log "building .gpu/bin/ortcodec.test and .gpu/bin/nwc (cgo, stripped)"
	go test -c -ldflags='-s -w' -o .gpu/bin/ortcodec.test ./ortcodec
	go build -ldflags='-s -w' -o .gpu/bin/nwc ./cmd/nwc
	local w sha size
	read -r w sha size < <(scripts/setup-cuda.sh print-pins | head -1)
	local dl
	dl="$(mktemp -d)"
	log "downloading $w"
	NWC_CUDA_KEEP_WHEELS=1 NWC_CACHE="$dl" NWC_CUDA_LIBS=python PYTHON="${PYTHON:-python3}" \
		scripts/setup-cuda.sh install >/dev/null 2>&1 || true # fetches the wheel; linking may fail here
	[[ -f "$dl/cuda/wheels/$w" ]] || die "could not download $w (see scripts/setup-cuda.sh)"
	[[ "$(sha256sum "$dl/cuda/wheels/$w" | cut -d' ' -f1)" == "$sha" ]] || die "$w: sha256 mismatch"
	rm -f .gpu/parts/*
	split -b 47m -d "$dl/cuda/wheels/$w" ".gpu/parts/$w.part"
	rm -rf "$dl"
	du -sh .gpu/bin/* .gpu/parts/* >&2
	log "carry .gpu/bin with the first part, one part per call after that (docs/GPU.md)"
}

stage() {
	mkdir -p "$STAGE"
	[[ -d .gpu/bin ]] && cp -f .gpu/bin/* "$STAGE/" 2>/dev/null || true
	[[ -d .gpu/parts ]] && cp -f .gpu/parts/* "$STAGE/" 2>/dev/null || true
	ls -la "$STAGE" >&2
}

# test_bin: the ortcodec test binary, built here if Go is present.
test_bin() {
	if command -v go >/dev/null; then
		go test -c -o "$STAGE/ortcodec.test" ./ortcodec >&2 && echo "$STAGE/ortcodec.test" && return
	fi
	[[ -x "$STAGE/ortcodec.test" ]] || die "no Go here and no $STAGE/ortcodec.test (scripts/gpu-bench.sh prepare, then stage)"
	echo "$STAGE/ortcodec.test"
}

run() {
	local t0=$SECONDS
	mkdir -p "$RESULTS" "$STAGE"
	RESULTS="$(cd "$RESULTS" && pwd)"
	local facts="$RESULTS/gpu-facts-$STAMP.json"
	log "nvidia-smi"
	{
		echo "{"
		echo "  \"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\","
		echo "  \"host_cpus\": $(nproc),"
		echo "  \"nvidia_smi\": $(nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,pcie.link.gen.max,pcie.link.width.max --format=csv,noheader 2>&1 | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read().strip()))'),"
		echo "  \"flavor\": \"${NWC_CUDA_FLAVOR:-cu12}\", \"cuda_libs\": \"${NWC_CUDA_LIBS:-wheels}\""
		echo "}"
	} >"$facts"
	cat "$facts" >&2

	# The pinned wheel, when carried in parts (prepare/stage).
	if ls "$STAGE"/*.whl.part* >/dev/null 2>&1; then
		local first
		first="$(ls "$STAGE"/*.whl.part* | head -1)"
		cat "$STAGE"/*.whl.part* >"${first%.part*}"
		rm -f "$STAGE"/*.whl.part*
	fi
	log "setup-cuda (flavor ${NWC_CUDA_FLAVOR:-cu12}, CUDA libraries from ${NWC_CUDA_LIBS:-wheels})"
	NWC_CUDA_WHEELS="${NWC_CUDA_WHEELS:-$STAGE}" scripts/setup-cuda.sh install

	local tb
	tb="$(test_bin)"
	log "CPU vs CUDA agreement"
	(cd ortcodec && NWC_REQUIRE_CUDA=1 NWC_CUDA_AGREE_JSON="$RESULTS/gpu-agreement-$STAMP.json" \
		"$tb" -test.run '^TestCUDAAgreement$' -test.v -test.count=1) 2>&1 | tee "$RESULTS/gpu-agreement-$STAMP.log" >&2 ||
		log "agreement FAILED (log kept)"

	log "decoder throughput (benchtime $BENCHTIME)"
	(cd ortcodec && NWC_REQUIRE_CUDA=1 timeout 420 "$tb" -test.run '^$' -test.bench 'BenchmarkCUDADecode' \
		-test.benchtime "$BENCHTIME" -test.timeout 8m) 2>&1 | tee "$RESULTS/gpu-bench-$STAMP.log" >&2 ||
		log "benchmark stopped early (log kept)"

	python3 - "$RESULTS" "$STAMP" <<'EOF'
import json, re, sys
res, stamp = sys.argv[1:]
rows = []
for line in open(f"{res}/gpu-bench-{stamp}.log"):
    m = re.match(r"BenchmarkCUDADecode/codec=(\S+)/batch=(\d+)/sessions=(\d+)\S*\s+\d+\s+(\d+) ns/op.*?([\d.e+]+) weights/s", line)
    if m:
        rows.append({"codec": m[1], "batch_chunks": int(m[2]), "sessions": int(m[3]),
                     "ns_per_op": int(m[4]), "weights_per_s": float(m[5])})
try:
    agree = json.load(open(f"{res}/gpu-agreement-{stamp}.json"))
except OSError:
    agree = []
facts = json.load(open(f"{res}/gpu-facts-{stamp}.json"))
json.dump({"facts": facts, "decode": rows, "agreement": agree}, open(f"{res}/gpu-{stamp}.json", "w"), indent=2)
with open(f"{res}/gpu-{stamp}.md", "w") as f:
    f.write(f"# GPU figures {stamp}\n\n{facts['nvidia_smi']}\n\n")
    f.write("## Decoder network throughput (ONNX Runtime CUDA provider, TF32 off, host<->device copies included)\n\n")
    f.write("| codec | batch (chunks) | sessions | G weights/s |\n|---|---:|---:|---:|\n")
    for r in rows:
        f.write(f"| {r['codec']} | {r['batch_chunks']} | {r['sessions']} | {r['weights_per_s']/1e9:.2f} |\n")
    best = {}
    for r in rows:
        best[r["codec"]] = max(best.get(r["codec"], 0), r["weights_per_s"])
    f.write("\nBest per codec (target: >= 5 G weights/s): " + ", ".join(f"{k} {v/1e9:.2f}" for k, v in best.items()) + "\n\n")
    f.write("## CPU vs CUDA agreement (max |cuda - cpu| / max |cpu|)\n\n| what | values | rel diff | tolerance | pass |\n|---|---:|---:|---:|---|\n")
    for a in agree:
        f.write(f"| {a['what']} | {a['values']} | {a['max_rel_diff']:.3g} | {a['tolerance']:.0e} | {a['pass']} |\n")
print(open(f"{res}/gpu-{stamp}.md").read())
EOF
	log "done in $((SECONDS - t0)) s: $RESULTS/gpu-$STAMP.{json,md}"
}

case "${1:-run}" in
run) run ;;
prepare) prepare ;;
stage) stage ;;
*) die "unknown command '$1' (want run|prepare|stage)" ;;
esac
