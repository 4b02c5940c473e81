#!/usr/bin/env bash
# bench-generate.sh [FILE.nwc]: generation speed of nwc's runtime against llama.cpp on
# the same weights and thread count (issue 10, item 6). Not part of `make test`.
#
# The .nwc (default: smollm2-135m compressed with `nwc compress --bits 4`, cached in
# $NWC_CACHE/bench-generate) is exported to an F32 GGUF (`nwc decompress -o x.gguf`, the
# weights our runtime decodes, bit for bit: docs/EXPORT.md); llama.cpp (llama-cpp-python,
# the build scripts/check-export.sh caches) runs that GGUF. Both: a 512-token prompt of
# WikiText-2 test text (prefill), then 128 greedy tokens one at a time (decode), THREADS
# threads (default 2), REPEAT runs each (default 3, medians), interleaved.
# Writes docs/results/generate-speed-<model>.md (OUT=... to change).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
export NWC_CACHE=${NWC_CACHE:-$HOME/.cache/nwc}
threads=${THREADS:-2}
repeat=${REPEAT:-3}
lvenv=${LLAMA_VENV:-$NWC_CACHE/llamacpp/venv-0.3.16}
out=${OUT:-docs/results/generate-speed-smollm2-135m.md}
[ -x "$lvenv/bin/python" ] || { echo "bench-generate: no llama-cpp-python in $lvenv: run scripts/check-export.sh once (it builds and caches it)" >&2; exit 1; }
make -s build
work=$NWC_CACHE/bench-generate
mkdir -p "$work"
nwcfile=${1:-$work/smollm2-135m-4.nwc}
if [ ! -f "$nwcfile" ]; then
	bin/nwc compress --model smollm2-135m --bits 4 -o "$nwcfile"
fi
gguf=$work/$(basename "$nwcfile" .nwc)-f32.gguf
if [ ! -f "$gguf" ] || [ "$gguf" -ot "$nwcfile" ]; then
	bin/nwc decompress "$nwcfile" -o "$gguf"
fi
text=eval/testdata/wikitext-2-raw-test.txt
"$lvenv/bin/python" - "$gguf" "$nwcfile" "$text" "$threads" "$repeat" "$out" <<'PY'
import json, statistics, subprocess, sys, time
from llama_cpp import Llama
gguf, nwcfile, textfile, threads, repeat, out = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
NP, NG = 512, 128
llm = Llama(model_path=gguf, n_ctx=1024, n_threads=threads, n_threads_batch=threads, n_batch=512, verbose=False)
raw = open(textfile, encoding="utf-8").read()[:20000]
ids = llm.tokenize(raw.encode(), add_bos=False)[:NP]
prompt = llm.detokenize(ids).decode("utf-8", errors="ignore")
ids = llm.tokenize(prompt.encode(), add_bos=False)
def run_llama():
    llm.reset()
    t0 = time.perf_counter(); llm.eval(ids); t1 = time.perf_counter()
    toks = []
    for _ in range(NG):
        tok = llm.sample(temp=0.0)
        toks.append(tok)
        llm.eval([tok])
    t2 = time.perf_counter()
    return len(ids) / (t1 - t0), NG / (t2 - t1), toks
def run_nwc():
    r = subprocess.run(["bin/nwc", "generate", "--model", nwcfile, "--prompt", prompt, "--max-tokens", str(NG),
                        "--ignore-eos", "--json", "--threads", str(threads)], capture_output=True, text=True, check=True)
    j = json.loads(r.stdout)
    return j["prefill_tokens_per_second"], j["decode_tokens_per_second"], j["token_ids"], len(j["prompt_ids"]), j["load_seconds"]
L, N = [], []
for _ in range(repeat):
    L.append(run_llama()); N.append(run_nwc())
med = lambda xs: statistics.median(xs)
lp, ld = med([x[0] for x in L]), med([x[1] for x in L])
np_, nd = med([x[0] for x in N]), med([x[1] for x in N])
same = sum(a == b for a, b in zip(L[0][2], N[0][2]))
lines = [
    "# Generation speed: nwc's runtime against llama.cpp, same weights, same threads",
    "",
    f"Regenerate: `scripts/bench-generate.sh` (THREADS={threads}, REPEAT={repeat}). Weights: `{nwcfile.split('/')[-1]}` decoded by nwc;"
    f" llama.cpp runs its F32 GGUF export (`nwc decompress -o x.gguf`, the same float32 values). Prompt: {len(ids)} tokens of"
    f" WikiText-2 test text (nwc tokenized it to {N[0][3]}); then {NG} greedy tokens one at a time. Medians of {repeat} runs, interleaved.",
    "",
    "| runtime | prefill tokens/s | decode tokens/s |",
    "|---|---|---|",
    f"| llama.cpp (llama-cpp-python, F32 GGUF, {threads} threads) | {lp:.1f} | {ld:.1f} |",
    f"| nwc (ONNX Runtime 1.24.1 CPU, float32, {threads} threads) | {np_:.1f} | {nd:.1f} |",
    f"| ratio nwc / llama.cpp | {np_/lp:.2f} | {nd/ld:.2f} |",
    "",
    f"- Greedy tokens identical to llama.cpp's: {same} of {NG} (first run; the two stacks round differently, so a near tie can flip a token).",
    f"- nwc's load time (decode every tensor on the fly, build the graph, create the session): {med([x[4] for x in N]):.2f} s (not in the rates).",
    "- Runs per side: " + ", ".join(f"{a[0]:.0f}/{a[1]:.1f}" for a in L) + " (llama.cpp prefill/decode); " + ", ".join(f"{a[0]:.0f}/{a[1]:.1f}" for a in N) + " (nwc).",
]
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
