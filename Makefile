# nwc: build, test and demo targets. Everything that is downloaded lives in
# $(NWC_CACHE) (scripts/setup.sh), never in the repository.
#
#   make setup        ONNX Runtime, libtokenizers.a, reference models, venv-check
#   make setup-train  Python venv for codec training (torch from PyPI: large)
#   make build        bin/nwc
#   make test         setup + gofmt check + go vet + go test (models and ORT required)
#   make fuzz         every Fuzz* target for $(FUZZTIME) each
#   make demo         inspect / compress / decompress a reference model into $(OUT)
#   make clean        remove bin/ and $(OUT) (the cache stays; rm -rf $(NWC_CACHE) for that)

NWC_CACHE ?= $(HOME)/.cache/nwc
GO        ?= go
BIN       ?= bin
OUT       ?= out
FUZZTIME  ?= 60s
TESTFLAGS ?=
GOFLAGS_BUILD ?=

ORT_LIB := $(NWC_CACHE)/lib/libonnxruntime.so

# cgo: github.com/daulet/tokenizers links against $(NWC_CACHE)/lib/libtokenizers.a
CGO_LDFLAGS += -L$(NWC_CACHE)/lib
export CGO_LDFLAGS
export NWC_CACHE

TEST_ENV := ONNXRUNTIME_SHARED_LIBRARY_PATH=$(ORT_LIB) NWC_REQUIRE_ORT=1 NWC_REQUIRE_MODELS=1

# Go files to gofmt-check (skip VCS, testdata, outputs).
FIND_GOFILES = find . -type d \( -name .git -o -name testdata -o -path ./out -o -path ./bin -o -name node_modules \) -prune -o -type f -name '*.go' -print

.PHONY: all setup setup-check setup-train setup-cuda setup-llamacpp train build test test-nocgo check-api-example fmt-check vet fuzz demo clean check-tokenizer check-gguf-tokenizer check-embeddings check-decode

all: build

setup:
	NWC_CACHE=$(NWC_CACHE) scripts/setup.sh

# only the small numpy+gguf venv (also part of `make setup`)
setup-check:
	NWC_CACHE=$(NWC_CACHE) scripts/setup.sh check-venv

setup-train:
	NWC_CACHE=$(NWC_CACHE) scripts/setup-train.sh

# GPU build of ONNX Runtime + CUDA libraries for --provider cuda (about 2 GB
# of PyPI wheels; not part of setup/test). docs/GPU.md
setup-cuda:
	NWC_CACHE=$(NWC_CACHE) scripts/setup-cuda.sh

# llama.cpp's llama-quantize/imatrix/perplexity, built from the vendored
# sources of the llama-cpp-python 0.3.16 sdist (minutes; not part of
# setup/test). scripts/run-llamacpp-peers.sh uses them.
setup-llamacpp:
	NWC_CACHE=$(NWC_CACHE) scripts/setup-llamacpp-tools.sh

# Reproduce one shipped codec from scratch (dataset, training, export, parity):
# nwc-w128d2-l300 by default (LAMBDA=... for another rate point; OUT=... to
# write elsewhere than models/). About 8 minutes on an idle 2-core machine.
train: setup setup-train
	NWC_CACHE=$(NWC_CACHE) scripts/train/run_all.sh

build:
	@mkdir -p $(BIN)
	$(GO) build $(GOFLAGS_BUILD) -o $(BIN)/nwc ./cmd/nwc

fmt-check:
	@bad="$$($(FIND_GOFILES) | xargs -r gofmt -l)"; \
	if [ -n "$$bad" ]; then echo "gofmt: these files need formatting (run gofmt -w):"; echo "$$bad"; exit 1; fi; \
	echo "gofmt: ok"

vet:
	$(GO) vet ./...

test: setup fmt-check test-nocgo
	$(TEST_ENV) $(GO) vet ./...
	$(TEST_ENV) $(GO) test $(TESTFLAGS) ./...

# The build without cgo (no ONNX Runtime, no tokenizer library): everything
# that does not need them builds, vets and passes its tests; a neural-coded
# tensor is refused with a clear error (plugin/nocgo_test.go).
test-nocgo:
	CGO_ENABLED=0 $(GO) build ./...
	CGO_ENABLED=0 $(GO) vet ./...
	env -u NWC_REQUIRE_ORT CGO_ENABLED=0 $(GO) test $(TESTFLAGS) ./plugin/ ./loader/... ./internal/... ./cmd/nwc/

# The README's Go example, built in a fresh module outside the repository that
# requires this one, decodes FILE (a .nwc made by nwc compress).
check-api-example: setup
	NWC_CACHE=$(NWC_CACHE) scripts/check-api-example.sh $(FILE)

# Runs each fuzz target (go test -list 'Fuzz.*', per package) for $(FUZZTIME).
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list 'Fuzz.*' $$pkg | grep '^Fuzz' || true); do \
			echo "== $$pkg $$f ($(FUZZTIME))"; \
			$(TEST_ENV) $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
		done; \
	done

# The main job on the shipped default: compress the reference LLM with the
# neural codec at ~4 bits/weight, load it back on the fly and report
# bits/weight, perplexity and KL (DEMO_WINDOWS windows of 2048 tokens of
# WikiText-2), decompress it to safetensors; plus a lossless round trip of an
# fp32 model. DEMO_CALIB calibration tokens (cached after the first run).
DEMO_WINDOWS ?= 2
DEMO_CALIB   ?= 16384
demo: setup build
	@mkdir -p $(OUT)
	$(BIN)/nwc inspect smollm2-135m | tail -n 2
	$(BIN)/nwc compress --codec lossless --model minilm-l6 -o $(OUT)/minilm.nwc
	$(BIN)/nwc inspect $(OUT)/minilm.nwc --verify | tail -n 3
	$(BIN)/nwc decompress $(OUT)/minilm.nwc -o $(OUT)/minilm.safetensors
	ONNXRUNTIME_SHARED_LIBRARY_PATH=$(ORT_LIB) $(BIN)/nwc compress --model smollm2-135m --codec nwc --bits 4 --calib-tokens $(DEMO_CALIB) -o $(OUT)/smollm2-nwc4.nwc
	ONNXRUNTIME_SHARED_LIBRARY_PATH=$(ORT_LIB) $(BIN)/nwc eval --model $(OUT)/smollm2-nwc4.nwc --reference smollm2-135m --max-windows $(DEMO_WINDOWS)
	ONNXRUNTIME_SHARED_LIBRARY_PATH=$(ORT_LIB) $(BIN)/nwc decompress $(OUT)/smollm2-nwc4.nwc -o $(OUT)/smollm2-nwc4.safetensors

# Tokenizer cross-check against llama.cpp's own tokenizer reading the GGUF
# (llama-cpp-python compiles llama.cpp from source: ~10-40 min on 2 cores,
# so it is not part of `make test`; the ids it agreed with are pinned there).
LLAMACPP_VENV := $(NWC_CACHE)/venv-llamacpp
check-tokenizer: setup
	@if [ ! -x $(LLAMACPP_VENV)/bin/python ] || ! $(LLAMACPP_VENV)/bin/python -c 'import llama_cpp, tokenizers' 2>/dev/null; then \
		python3 -m venv $(LLAMACPP_VENV) && \
		CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_OPENMP=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_MTMD=OFF" \
		$(LLAMACPP_VENV)/bin/pip install --no-cache-dir llama-cpp-python==0.3.36 tokenizers==0.23.3; \
	fi
	$(TEST_ENV) NWC_CHECK_PYTHON=$(LLAMACPP_VENV)/bin/python NWC_REQUIRE_LLAMA_CPP=1 \
		$(GO) test -count=1 -v -run 'TestWikiTextMatchesReferences|TestSmolLM2Tokenizer' ./plugin/tokenizer

# Sentence embeddings of minilm-l6 against sentence-transformers (docs/EMBEDDINGS.md):
# the 1,000 evaluation sentences and the 32 golden ones. Adds transformers and
# sentence-transformers (pinned) to the training venv; not part of `make test`
# (the Go test uses the committed golden file).
TRAIN_PY := $(NWC_CACHE)/venv-train/bin/python
check-embeddings: setup setup-train
	@$(TRAIN_PY) -c 'import sentence_transformers' 2>/dev/null || { \
		$(TRAIN_PY) -m pip install -q transformers==4.57.1 && \
		$(TRAIN_PY) -m pip install -q --no-deps sentence-transformers==5.1.2 && \
		$(TRAIN_PY) -m pip install -q scipy scikit-learn httpx; }
	$(TRAIN_PY) scripts/check-embeddings.py --eval-set 1000
	$(TEST_ENV) NWC_EMBED_REF=$(NWC_CACHE)/embed-ref-minilm-l6-1000.json \
		$(GO) test -count=1 -v -run 'TestEvalSetParity|TestGoldenEmbeddings' ./plugin/bert

# SentencePiece (gemma3-270m) and byte-level BPE (smollm2-135m) tokenizers built from
# GGUF metadata against llama.cpp on the whole WikiText-2 test text (docs/EVAL.md).
# Needs llama-cpp-python 0.3.16 in $(NWC_CACHE)/llamacpp/venv-0.3.16 (scripts/check-export.sh builds it).
LLAMACPP_PY := $(NWC_CACHE)/llamacpp/venv-0.3.16/bin/python
check-gguf-tokenizer: build
	@$(LLAMACPP_PY) -c 'import llama_cpp' || { echo "no llama-cpp-python at $(LLAMACPP_PY): run scripts/check-export.sh once"; exit 1; }
	$(LLAMACPP_PY) scripts/check-gguf-tokenizer.py --nwc $(BIN)/nwc --gguf $(NWC_CACHE)/models/gemma3-270m/gemma-3-270m-q4_k_m.gguf
	$(LLAMACPP_PY) scripts/check-gguf-tokenizer.py --nwc $(BIN)/nwc --gguf $(NWC_CACHE)/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf

clean:
	rm -rf $(BIN) $(OUT)

# Decode-path checks on a real compressed model (issue 5): decompress twice
# is byte-identical, decompressed = decoded = what the runtime was built
# with (float32 digests), one corrupted byte in any section is named.
#   make check-decode FILE=s4.nwc
check-decode: build
	@test -n "$(FILE)" || { echo "usage: make check-decode FILE=model.nwc" >&2; exit 2; }
	$(TEST_ENV) scripts/check-decode.sh $(FILE)

# Decode and load speed (issue 11, docs/LOADING.md "Measuring"). Run them on an
# idle machine: every measurement is a fresh process, BENCH_REPEAT runs
# interleaved, medians. The .nwc files are compressed once (calibration
# included) and cached under $(NWC_CACHE)/bench.
#   make bench-decode  per codec (every shipped codec + rtn-g128@4, ecsq@4,
#                      lossless): weights/s per stage and in total, peak RSS
#                      -> docs/results/decode-$(BENCH_MODEL).*; the batch x
#                      threads x sessions sweep of BENCH_SWEEP_CODEC ->
#                      decode-sweep-*; KL at ~3 and ~4 bits/weight against
#                      decode speed (with the rd report) -> pareto-*
#   make bench-load    time to a ready model from the GGUF, the .nwc made
#                      from it and its decompressed safetensors -> load-*
BENCH_MODEL       ?= smollm2-135m
BENCH_REPEAT      ?= 3
BENCH_CODECS      ?= shipped
BENCH_SWEEP_CODEC ?= nwc-w128d2-l300-dw32d1
BENCH_SWEEP       ?= batch=4096,16384,65536 threads=1,2 sessions=1,2
BENCH_ENV         := ONNXRUNTIME_SHARED_LIBRARY_PATH=$(ORT_LIB)

.PHONY: bench-decode bench-load
bench-decode: build
	$(BENCH_ENV) $(BIN)/nwc bench decode --model $(BENCH_MODEL) --codecs $(BENCH_CODECS) --repeat $(BENCH_REPEAT) --out docs/results
	$(BENCH_ENV) $(BIN)/nwc bench decode --model $(BENCH_MODEL) --codecs $(BENCH_SWEEP_CODEC) --repeat $(BENCH_REPEAT) --out docs/results --sweep $(BENCH_SWEEP)
	$(BIN)/nwc bench pareto --rd docs/results/rd-$(BENCH_MODEL).json --decode docs/results/decode-$(BENCH_MODEL).json --out docs/results

bench-load: build
	$(BENCH_ENV) $(BIN)/nwc bench load --model $(BENCH_MODEL) --repeat $(BENCH_REPEAT) --out docs/results
