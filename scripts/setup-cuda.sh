#!/usr/bin/env bash
# scripts/setup-cuda.sh (`make setup-cuda`): the GPU build of ONNX Runtime and
# the CUDA libraries its CUDA execution provider links against, for
# `nwc ... --provider cuda` (docs/GPU.md). Not part of `make setup` or
# `make test`: it downloads about 2 GB of wheels and unpacks about 3.6 GB.
#
# Everything comes from PyPI wheels (pip download --no-deps, --require-hashes:
# each wheel is pinned by sha256 below) and lands outside the repository:
#
#   ${NWC_CACHE:-$HOME/.cache/nwc}/cuda/
#     lib/libonnxruntime.so -> libonnxruntime.so.<ver>   PyPI onnxruntime-gpu
#     lib/libonnxruntime_providers_{cuda,shared}.so
#     lib/libcudart.so.N, libcublas*.so.N, libcudnn*.so.9, ...   nvidia-* wheels
#     MANIFEST       sha256 and source wheel of every installed file
#     .installed     what was installed (flavour, pins); the idempotency stamp
#
# Every installed file is checked against the sha256 that its (pinned) wheel's
# RECORD lists; a second run re-checks size+mtime stamps and finishes in
# seconds (NWC_REVERIFY=1: hash everything again).
#
# nwc loads lib/libonnxruntime.so for --provider cuda and loads the CUDA
# libraries from lib/ itself (internal/ortenv/cuda.go): no LD_LIBRARY_PATH
# needed. lib/env.sh exports LD_LIBRARY_PATH for other tools (ldd, python).
#
# Usage: scripts/setup-cuda.sh [install|check|print-pins]      (default install)
# Env:   NWC_CACHE          cache directory (default $HOME/.cache/nwc)
#        NWC_CUDA_FLAVOR    cu12 (default): onnxruntime-gpu 1.24.1, CUDA 12
#                           wheels; needs an NVIDIA driver for CUDA >= 12.
#                           cu13: onnxruntime-gpu 1.31.1, CUDA 13 wheels;
#                           needs a driver for CUDA >= 13 (R580+).
#        NWC_CUDA_LIBS      wheels (default): download the pinned nvidia-*
#                           wheels; python: link the CUDA libraries of an
#                           existing Python environment ($PYTHON's nvidia.*
#                           packages, e.g. the ones PyTorch brought) instead
#                           of downloading them (offline GPU hosts).
#        NWC_CUDA_WHEELS    folder searched for the pinned wheels before
#                           PyPI (offline hosts: bring them along).
#        NWC_CUDA_KEEP_WHEELS=1  keep the downloaded wheels in cuda/wheels
#        PYTHON             python with pip (default python3)
set -euo pipefail

NWC_CACHE="${NWC_CACHE:-$HOME/.cache/nwc}"
PYTHON="${PYTHON:-python3}"
FLAVOR="${NWC_CUDA_FLAVOR:-cu12}"
LIBS_MODE="${NWC_CUDA_LIBS:-wheels}"
WHEEL_DIR_LOCAL="${NWC_CUDA_WHEELS:-}"
NWC_REVERIFY="${NWC_REVERIFY:-0}"
DEST="$NWC_CACHE/cuda"
LIB="$DEST/lib"
ORT_API_VERSION=24 # what github.com/yalue/onnxruntime_go v1.27.0 asks for
ORT_LOAD_CHECK="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/ort_load_check.py" # shared by setup.sh and setup-cuda.sh

# ---------------------------------------------------------------- pins ----
# "wheel-file-name sha256 size" (sha256 and size as PyPI lists them).
case "$FLAVOR" in
cu12)
	# The same ONNX Runtime version as the CPU library (scripts/setup.sh).
	# Its CUDA provider NEEDs libcublasLt.so.12 libcublas.so.12
	# libcurand.so.10 libcufft.so.11 libcudart.so.12 libcudnn.so.9 (readelf
	# -d); cuBLAS wants nvrtc, cuFFT nvJitLink (their wheels' dependencies).
	ORT_WHEEL="onnxruntime_gpu-1.24.1-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl ac4bfc90c376516b13d709764ab257e4e3d78639bf6a2ccfc826e9db4a5c7ddf 252616647"
	CUDA_WHEELS=(
		"nvidia_cuda_runtime_cu12-12.9.79-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl 25bba2dfb01d48a9b59ca474a1ac43c6ebf7011f1b0b8cc44f54eb6ac48a96c3 3493179"
		"nvidia_cublas_cu12-12.9.3.13-py3-none-manylinux_2_27_x86_64.whl d7d51055f161b317c7105ddaae90e71eda059026074ffef93cf7cde2886bfe72 581217458"
		"nvidia_cudnn_cu12-9.28.0.42-py3-none-manylinux_2_27_x86_64.whl 9ff58b7f36dacd0a93e89f8f2957b52466889217963701daa15e577317cfa375 716538495"
		"nvidia_cufft_cu12-11.4.1.4-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl c67884f2a7d276b4b80eb56a79322a95df592ae5e765cf1243693365ccab4e28 200877592"
		"nvidia_curand_cu12-10.3.10.19-py3-none-manylinux_2_27_x86_64.whl 49b274db4780d421bd2ccd362e1415c13887c53c214f0d4b761752b8f9f6aa1e 68295626"
		"nvidia_cuda_nvrtc_cu12-12.9.86-py3-none-manylinux2010_x86_64.manylinux_2_12_x86_64.whl 210cf05005a447e29214e9ce50851e83fc5f4358df8b453155d5e1918094dcb4 89568129"
		"nvidia_nvjitlink_cu12-12.9.86-py3-none-manylinux2010_x86_64.manylinux_2_12_x86_64.whl e3f1171dbdc83c5932a45f0f4c99180a70de9bd2718c1ab77d14104f6d7147f9 39748338"
	)
	;;
cu13)
	# onnxruntime-gpu on PyPI is built for CUDA 13 in 1.31.x. Its CUDA
	# provider NEEDs libcublasLt.so.13 libcublas.so.13 libcurand.so.10
	# libcudart.so.13 libcuda.so.1; cuDNN and cuFFT are its wheel's extras.
	ORT_WHEEL="onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl 05d548956197b9d01f59b625de740e0d6be3593f874e241a12dc0362650ecdf7 255569273"
	CUDA_WHEELS=(
		"nvidia_cuda_runtime-13.5.37-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl df2b79a8852f10d1fef8c848489c49eebb5754051bf870202a862831412b179d 2504024"
		"nvidia_cublas-13.10.0.20-py3-none-manylinux1_x86_64.manylinux_2_5_x86_64.whl dcc6d63884c53d07e267ce7e6feac17b2538cebaafec5db865736c3e28e4dc84 444289903"
		"nvidia_cudnn_cu13-9.28.1.4-py3-none-manylinux_2_27_x86_64.whl a54f205b1db1f2895d99f398754db1369816f0569dd459731f925635cf7b65ec 516817937"
		"nvidia_cufft-12.5.0.14-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl b8be26837a5abad2b5b74f3e92dd29f622a42934b355be0961a48712cbba23ad 165072555"
		"nvidia_curand-10.4.5.25-py3-none-manylinux_2_27_x86_64.whl 22bb226a857e5888fe6b54ae465fc4371296bcff13a35f79e19691bcf454f529 77113015"
		"nvidia_cuda_nvrtc-13.5.37-py3-none-manylinux2010_x86_64.manylinux_2_12_x86_64.whl 86b4d68058807988b7d9af5b44917a0601e9c337f35ccd657bfb3c759ff8d8bc 58185930"
		"nvidia_nvjitlink-13.5.37-py3-none-manylinux2010_x86_64.manylinux_2_12_x86_64.whl 280d7cb9649704145f074b8dbde500de04ce02d0872e066e20a83c17bcaa93eb 46642491"
	)
	;;
*)
	echo "setup-cuda: NWC_CUDA_FLAVOR=$FLAVOR: want cu12 or cu13" >&2
	exit 2
	;;
esac
case "$LIBS_MODE" in
wheels | python) ;;
*)
	echo "setup-cuda: NWC_CUDA_LIBS=$LIBS_MODE: want wheels or python" >&2
	exit 2
	;;
esac

# ------------------------------------------------------------- helpers ----
log() { printf '\033[1m[setup-cuda]\033[0m %s\n' "$*" >&2; }
die() {
	printf '\033[31m[setup-cuda] ERROR:\033[0m %s\n' "$*" >&2
	exit 1
}
sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

TMP_ROOT=""
cleanup() { [[ -z "$TMP_ROOT" ]] || rm -rf "$TMP_ROOT"; }
trap cleanup EXIT

# The stamp: everything that decides what lib/ holds.
install_id() {
	echo "flavor=$FLAVOR libs=$LIBS_MODE"
	echo "$ORT_WHEEL"
	if [[ "$LIBS_MODE" == wheels ]]; then printf '%s\n' "${CUDA_WHEELS[@]}"; fi
}

# fetch_wheel "NAME SHA SIZE" DIR: the pinned wheel into DIR, from
# $NWC_CUDA_WHEELS or PyPI, sha256-checked.
fetch_wheel() {
	local w sha size
	read -r w sha size <<<"$1"
	local dir="$2" f="$2/$w"
	if [[ -n "$WHEEL_DIR_LOCAL" && -f "$WHEEL_DIR_LOCAL/$w" ]]; then
		log "using $WHEEL_DIR_LOCAL/$w"
		cp -f "$WHEEL_DIR_LOCAL/$w" "$f"
	elif [[ ! -f "$f" ]] || [[ "$(stat -c %s "$f")" != "$size" ]]; then
		"$PYTHON" -m pip --version >/dev/null 2>&1 || die "$PYTHON has no pip (needed for pip download)"
		local name ver py tag
		name="${w%%-*}"
		ver="${w#*-}"
		ver="${ver%%-*}"
		tag="$(cut -d- -f3 <<<"$w")" # cp311 or py3
		py=3.12
		if [[ "$tag" =~ ^cp3([0-9]+)$ ]]; then py="3.${BASH_REMATCH[1]}"; fi
		echo "${name//_/-}==$ver --hash=sha256:$sha" >"$dir/req.txt"
		log "pip download $name==$ver ($((size / 1048576)) MiB)"
		"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --require-hashes --no-cache-dir \
			--python-version "$py" --implementation cp \
			--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
			--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
			--platform manylinux_2_12_x86_64 --platform manylinux2010_x86_64 \
			--platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 \
			-d "$dir" -r "$dir/req.txt" ||
			die "pip download $name==$ver failed (is PyPI reachable? offline: put $w into a folder and set NWC_CUDA_WHEELS)"
		[[ -f "$f" ]] || die "pip did not produce $w"
	fi
	local got
	got="$(sha256_of "$f")"
	[[ "$got" == "$sha" ]] || die "$w has sha256 $got, pinned $sha (registry content changed, or a corrupt copy in ${WHEEL_DIR_LOCAL:-the cache})"
}

# unpack WHEEL REGEX: extract the members matching REGEX into $LIB (flat),
# each checked against the wheel's RECORD, and append to MANIFEST.new.
unpack() {
	"$PYTHON" - "$1" "$2" "$LIB" "$DEST/MANIFEST.new" <<'EOF'
import base64, hashlib, os, re, sys, zipfile
whl, pattern, lib, manifest = sys.argv[1:]
z = zipfile.ZipFile(whl)
record = {}
for n in z.namelist():
    if n.endswith(".dist-info/RECORD"):
        for line in z.read(n).decode().splitlines():
            parts = line.rsplit(",", 2)
            if len(parts) == 3 and parts[1].startswith("sha256="):
                record[parts[0]] = parts[1][len("sha256="):]
if not record:
    sys.exit(f"{whl}: no RECORD with sha256 entries")
members = [n for n in z.namelist() if re.fullmatch(pattern, n)]
if not members:
    sys.exit(f"{whl}: no member matches {pattern}")
with open(manifest, "a") as man:
    for n in members:
        want = record.get(n)
        if want is None:
            sys.exit(f"{whl}: {n} is not in RECORD")
        base = os.path.basename(n)
        out = os.path.join(lib, base)
        h = hashlib.sha256()
        with z.open(n) as src, open(out + ".part", "wb") as dst:
            while True:
                b = src.read(1 << 20)
                if not b:
                    break
                h.update(b)
                dst.write(b)
        got = base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode()
        if got != want:
            os.unlink(out + ".part")
            sys.exit(f"{whl}: {n}: sha256 {got} differs from RECORD {want}")
        os.chmod(out + ".part", 0o755)
        os.replace(out + ".part", out)
        man.write(f"{h.hexdigest()}  {base}  {os.path.basename(whl)}\n")
EOF
}

# check_manifest: every file in MANIFEST has its sha256 (stamps: size+mtime).
check_manifest() {
	[[ -f "$DEST/MANIFEST" ]] || return 1
	local sha name src f st ok="$DEST/.manifest.ok" new="$DEST/.manifest.ok.new"
	: >"$new"
	while read -r sha name src; do
		f="$LIB/$name"
		[[ -f "$f" ]] || {
			log "missing: $f"
			return 1
		}
		if [[ "$src" == link:* ]]; then
			continue
		fi
		st="$sha $(stat -c '%s %Y' "$f") $name"
		if [[ "$NWC_REVERIFY" == 1 ]] || ! grep -qxF "$st" "$ok" 2>/dev/null; then
			[[ "$(sha256_of "$f")" == "$sha" ]] || {
				log "sha256 mismatch: $f"
				return 1
			}
		fi
		echo "$st" >>"$new"
	done <"$DEST/MANIFEST"
	mv -f "$new" "$ok"
}

# load_check LIB: dlopen the core library, print its version; it must offer
# the ORT API version onnxruntime_go needs. (The CUDA provider is loaded
# only when a session asks for it: this works without a GPU.)
load_check() {
	"$PYTHON" "$ORT_LOAD_CHECK" "$1" "$ORT_API_VERSION"
}

# needed_missing: the CUDA provider's DT_NEEDED libraries (less the C/C++
# runtime and the driver) that lib/ lacks.
needed_missing() {
	"$PYTHON" - "$LIB/libonnxruntime_providers_cuda.so" <<'EOF'
import os, struct, sys
p = sys.argv[1]
d = open(p, "rb").read()
assert d[:4] == b"\x7fELF" and d[4] == 2, "not a 64-bit ELF"
shoff, = struct.unpack_from("<Q", d, 0x28)
shentsize, shnum = struct.unpack_from("<HH", d, 0x3A)
secs = [struct.unpack_from("<IIQQQQIIQQ", d, shoff + i * shentsize) for i in range(shnum)]
dyn = [s for s in secs if s[1] == 6][0]  # SHT_DYNAMIC
strtab = secs[dyn[6]]
names = []
for off in range(dyn[4], dyn[4] + dyn[5], 16):
    tag, val = struct.unpack_from("<qQ", d, off)
    if tag == 0:
        break
    if tag == 1:  # DT_NEEDED
        s = strtab[4] + val
        names.append(d[s:d.index(b"\0", s)].decode())
system = ("libc.so", "libm.so", "libdl.so", "librt.so", "libpthread.so", "libstdc++.so", "libgcc_s.so", "ld-linux", "libz.so", "libcuda.so")
lib = os.path.dirname(p)
print(" ".join(n for n in names if not n.startswith(system) and not os.path.exists(os.path.join(lib, n))))
EOF
}

# python_nvidia_libs: the lib folders of $PYTHON's nvidia.* packages.
python_nvidia_libs() {
	"$PYTHON" - <<'EOF'
import glob, os, sys
try:
    import nvidia
except ImportError:
    sys.exit("no 'nvidia' package in this Python environment")
for root in nvidia.__path__:
    for d in sorted(glob.glob(os.path.join(root, "*", "lib"))):
        print(d)
EOF
}

# ------------------------------------------------------------- install ----
installed_ok() {
	[[ -f "$DEST/.installed" && "$(cat "$DEST/.installed")" == "$(install_id)" ]] && check_manifest
}

install() {
	if installed_ok; then
		log "ok: $LIB (flavor $FLAVOR, CUDA libraries from $LIBS_MODE; ONNX Runtime $(load_check "$LIB/libonnxruntime.so" 2>/dev/null || echo '?'))"
		return
	fi
	command -v sha256sum >/dev/null || die "sha256sum not found (coreutils)"
	log "installing flavor $FLAVOR (CUDA libraries from $LIBS_MODE) into $DEST"
	rm -rf "$LIB" "$DEST/MANIFEST" "$DEST/MANIFEST.new" "$DEST/.installed" "$DEST/.manifest.ok"
	mkdir -p "$LIB" "$DEST/wheels"
	local wdir="$DEST/wheels" w sha size
	TMP_ROOT=""

	# ONNX Runtime (GPU build): the core library and the provider bridges.
	fetch_wheel "$ORT_WHEEL" "$wdir"
	read -r w sha size <<<"$ORT_WHEEL"
	unpack "$wdir/$w" 'onnxruntime/capi/libonnxruntime(\.so\.[0-9.]+|_providers_cuda\.so|_providers_shared\.so)' ||
		die "unpacking $w failed"
	local core
	core="$(cd "$LIB" && ls libonnxruntime.so.1.* | head -1)"
	ln -sf "$core" "$LIB/libonnxruntime.so.1"
	ln -sf "$core" "$LIB/libonnxruntime.so"
	[[ "${NWC_CUDA_KEEP_WHEELS:-0}" == 1 ]] || rm -f "$wdir/$w"

	# The CUDA libraries.
	if [[ "$LIBS_MODE" == wheels ]]; then
		local entry
		for entry in "${CUDA_WHEELS[@]}"; do
			read -r w sha size <<<"$entry"
			fetch_wheel "$entry" "$wdir"
			unpack "$wdir/$w" 'nvidia/[a-z_]+/lib/lib[^/]*\.so[.0-9a-z]*' || die "unpacking $w failed"
			[[ "${NWC_CUDA_KEEP_WHEELS:-0}" == 1 ]] || rm -f "$wdir/$w"
		done
	else
		local dirs d f n=0
		dirs="$(python_nvidia_libs)" || die "NWC_CUDA_LIBS=python: $PYTHON has no nvidia.* CUDA packages"
		for d in $dirs; do
			for f in "$d"/lib*.so*; do
				[[ -f "$f" ]] || continue
				ln -sf "$f" "$LIB/$(basename "$f")"
				echo "-  $(basename "$f")  link:$f" >>"$DEST/MANIFEST.new"
				n=$((n + 1))
			done
		done
		log "linked $n CUDA libraries from $PYTHON's nvidia packages ($(tr '\n' ' ' <<<"$dirs"))"
	fi
	rm -f "$wdir/req.txt"
	rmdir "$wdir" 2>/dev/null || true

	local missing
	missing="$(needed_missing)" || die "cannot read the CUDA provider's dependencies"
	[[ -z "$missing" ]] || die "the CUDA provider needs $missing, not in $LIB (NWC_CUDA_LIBS=python: does that environment have CUDA ${FLAVOR#cu}?)"
	local v
	v="$(load_check "$LIB/libonnxruntime.so")" || die "$LIB/libonnxruntime.so does not load or lacks ORT API $ORT_API_VERSION"
	cat >"$LIB/env.sh" <<EOF
# For tools other than nwc (nwc loads these libraries itself): . $LIB/env.sh
export LD_LIBRARY_PATH="$LIB\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
EOF
	mv -f "$DEST/MANIFEST.new" "$DEST/MANIFEST"
	check_manifest || die "installed files do not match MANIFEST"
	install_id >"$DEST/.installed"
	log "installed ONNX Runtime $v (GPU build, flavor $FLAVOR) in $LIB ($(du -shL "$LIB" | cut -f1))"
}

check() {
	installed_ok || die "not installed or damaged: run scripts/setup-cuda.sh (flavor $FLAVOR, CUDA libraries from $LIBS_MODE)"
	log "ok: ONNX Runtime $(load_check "$LIB/libonnxruntime.so") in $LIB"
}

print_pins() {
	local entry w sha size
	for entry in "$ORT_WHEEL" "${CUDA_WHEELS[@]}"; do
		read -r w sha size <<<"$entry"
		printf '%-100s %10s %s\n' "$w" "$size" "$sha"
	done
}

case "${1:-install}" in
install) install ;;
check) check ;;
print-pins) print_pins ;;
-h | --help) sed -n '2,40p' "$0" ;;
*) die "unknown command '$1' (want install|check|print-pins)" ;;
esac
