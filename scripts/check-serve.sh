#!/usr/bin/env bash
# Real clients against a real `nwc serve` on loopback (not part of `make test`):
#   1. bin/nwc serve --model $MODEL: curl (JSON and SSE) and the official openai
#      Python client (scripts/check-serve.py clients), then a bounded load test
#      ($CLIENTS concurrent clients for $DURATION s) and the server's peak RSS;
#   2. the same client checks against $NWC_FILE (a .nwc), when it exists.
# Writes docs/results/serve-smollm2-135m.md (table) and
# docs/results/serve-transcripts.md (transcripts).
#
#   DURATION=60 CLIENTS=8 PARALLEL=2 MODEL=smollm2-135m NWC_FILE=/tmp/serve-s4.nwc scripts/check-serve.sh
#
# Needs bin/nwc (make build) and a venv with `openai` ($VENV, default
# $NWC_CACHE/venv-serve: python3 -m venv $VENV && $VENV/bin/pip install openai==3.51.0).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${NWC_CACHE:=$HOME/.cache/nwc}"
MODEL=${MODEL:-smollm2-135m}
NWC_FILE=${NWC_FILE:-/tmp/serve-s4.nwc}
DURATION=${DURATION:-60}
CLIENTS=${CLIENTS:-8}
PARALLEL=${PARALLEL:-2}
MAX_TOKENS=${MAX_TOKENS:-32}
PORT=${PORT:-18181}
VENV=${VENV:-$NWC_CACHE/venv-serve}
PY=$VENV/bin/python
OUT=docs/results
WORK=$(mktemp -d)
BASE=http://127.0.0.1:$PORT
SERVER_PID=

cleanup() { [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true; }
trap cleanup EXIT

start_server() { # MODEL ID LOG
	bin/nwc serve --model "$1" --model-id "$2" --addr "127.0.0.1:$PORT" --parallel "$PARALLEL" --max-queue 16 -q >"$3" 2>&1 &
	SERVER_PID=$!
	for _ in $(seq 300); do
		curl -sf "$BASE/health" >/dev/null 2>&1 && return 0
		kill -0 "$SERVER_PID" 2>/dev/null || { cat "$3"; echo "server died" >&2; exit 1; }
		sleep 0.5
	done
	echo "server did not come up" >&2
	exit 1
}

stop_server() { # LOG: SIGTERM, and the server must exit 0
	kill -TERM "$SERVER_PID"
	local rc=0
	wait "$SERVER_PID" || rc=$?
	SERVER_PID=
	[ "$rc" = 0 ] || { echo "server exited $rc" >&2; cat "$1"; exit 1; }
}

curl_transcript() { # ID
	local id=$1
	run() { # TITLE ARGS...
		local title=$1
		shift
		echo "\$ curl $(printf "%q " "$@")"
		curl "$@"
		echo
	}
	run "models" -s "$BASE/v1/models"
	run "chat" -s "$BASE/v1/chat/completions" -H 'Content-Type: application/json' \
		-d '{"model":"'"$id"'","messages":[{"role":"user","content":"What is the capital of France?"}],"temperature":0,"max_tokens":24}'
	run "chat stream" -sN "$BASE/v1/chat/completions" -H 'Content-Type: application/json' \
		-d '{"model":"'"$id"'","messages":[{"role":"user","content":"What is the capital of France?"}],"temperature":0,"max_tokens":24,"stream":true,"stream_options":{"include_usage":true}}'
	run "completions" -s "$BASE/v1/completions" -H 'Content-Type: application/json' \
		-d '{"model":"'"$id"'","prompt":"One, two, three, four, five,","temperature":0,"max_tokens":8}'
	run "completions stream" -sN "$BASE/v1/completions" -H 'Content-Type: application/json' \
		-d '{"model":"'"$id"'","prompt":"One, two, three, four, five,","temperature":0,"max_tokens":4,"stream":true}'
	run "bad request" -s -w '\nHTTP %{http_code}' "$BASE/v1/chat/completions" -H 'Content-Type: application/json' \
		-d '{"model":"'"$id"'","messages":[{"role":"user","content":"hi"}],"max_tokens":-1}'
	run "health" -s "$BASE/health"
}

# 1. The GGUF reference model: clients, load test, peak RSS.
start_server "$MODEL" "$MODEL" "$WORK/server.log"
curl_transcript "$MODEL" >"$WORK/curl.txt"
"$PY" scripts/check-serve.py clients --base-url "$BASE/v1" --model "$MODEL" >"$WORK/openai.txt"
"$PY" scripts/check-serve.py load --base-url "$BASE/v1" --model "$MODEL" --clients "$CLIENTS" \
	--duration "$DURATION" --max-tokens "$MAX_TOKENS" >"$WORK/load.json" || { cat "$WORK/load.json"; exit 1; }
RSS_KB=$(awk '/VmHWM/ {print $2}' "/proc/$SERVER_PID/status")
HEALTH=$(curl -s "$BASE/health")
stop_server "$WORK/server.log"

# 2. The .nwc file: the client checks.
NWC_SECTION="(no .nwc file at $NWC_FILE: skipped)"
if [ -f "$NWC_FILE" ]; then
	NWC_ID=$(basename "$NWC_FILE" .nwc)
	start_server "$NWC_FILE" "$NWC_ID" "$WORK/server-nwc.log"
	"$PY" scripts/check-serve.py clients --base-url "$BASE/v1" --model "$NWC_ID" >"$WORK/openai-nwc.txt" || true
	curl -s "$BASE/v1/chat/completions" -H 'Content-Type: application/json' \
		-d '{"model":"'"$NWC_ID"'","messages":[{"role":"user","content":"What is the capital of France?"}],"temperature":0,"max_tokens":24}' >"$WORK/curl-nwc.txt"
	stop_server "$WORK/server-nwc.log"
	NWC_SECTION=$(printf '%s\n\n```\n%s\n```\n\ncurl, chat (temperature 0):\n\n```\n%s\n```\n' \
		"\`bin/nwc serve --model $NWC_FILE\` ($(du -h "$NWC_FILE" | cut -f1)), openai-python checks:" \
		"$(cat "$WORK/openai-nwc.txt")" "$(cat "$WORK/curl-nwc.txt")")
fi

HOST="$(nproc) cores, $(uname -m), load average $(cut -d' ' -f1-3 /proc/loadavg)"
"$PY" - "$WORK/load.json" "$RSS_KB" "$OUT/serve-smollm2-135m.md" "$MODEL" "$PARALLEL" "$HOST" "$HEALTH" <<'EOF'
import json, sys
load = json.load(open(sys.argv[1]))
rss_mb = int(sys.argv[2]) / 1024
out, model, parallel, host, health = sys.argv[3:8]
rows = [
    ("concurrent clients", load["clients"]), ("duration (s)", load["duration_s"]),
    ("max_tokens per request", load["max_tokens"]), ("requests completed", load["requests"]),
    ("errors", load["errors"]), ("requests/s", load["requests_per_s"]),
    ("completion tokens/s (all clients)", load["tokens_per_s"]),
    ("time to first token p50 / p99 (s)", f'{load["ttft_p50_s"]} / {load["ttft_p99_s"]}'),
    ("time to completion p50 / p99 (s)", f'{load["total_p50_s"]} / {load["total_p99_s"]}'),
    ("server peak RSS (MB, VmHWM)", f"{rss_mb:.0f}"),
]
with open(out, "w") as f:
    f.write(f"# nwc serve: load test on {model}\n\n")
    f.write("`scripts/check-serve.sh` (openai-python streaming chat requests, temperature 0.7, a seed each, "
            f"`stream_options.include_usage`; server `--parallel {parallel} --max-queue 16`, CPU, loopback).\n"
            f"Machine: {host}; shared with other jobs, so the numbers are indicative only.\n\n")
    f.write("| measure | value |\n|---|---|\n")
    for k, v in rows:
        f.write(f"| {k} | {v} |\n")
    f.write(f"\nServer counters after the run (`GET /health`): `{health}`\n\n")
    f.write("Transcripts (curl and openai-python, GGUF and .nwc): [serve-transcripts.md](serve-transcripts.md).\n")
print(open(out).read())
EOF

{
	echo "# nwc serve: client transcripts"
	echo
	echo "From \`scripts/check-serve.sh\` against \`bin/nwc serve --model $MODEL\` on loopback."
	echo
	echo "## curl"
	echo
	echo '```'
	cat "$WORK/curl.txt"
	echo '```'
	echo
	echo "## openai-python"
	echo
	echo '```'
	cat "$WORK/openai.txt"
	echo '```'
	echo
	echo "## .nwc"
	echo
	echo "$NWC_SECTION"
	echo
	echo "## Server log (GGUF run, first and last lines)"
	echo
	echo '```'
	head -5 "$WORK/server.log"
	echo "..."
	tail -4 "$WORK/server.log"
	echo '```'
} >"$OUT/serve-transcripts.md"
grep -q "all checks passed" "$WORK/openai.txt" || { echo "openai checks failed: see $OUT/serve-transcripts.md" >&2; exit 1; }
if [ -f "$NWC_FILE" ]; then
	grep -q "all checks passed" "$WORK/openai-nwc.txt" || { echo "openai checks on the .nwc failed" >&2; exit 1; }
fi
echo "check-serve: ok ($OUT/serve-smollm2-135m.md, $OUT/serve-transcripts.md)"
