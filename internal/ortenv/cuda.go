package ortenv

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// CUDA library selection (docs/GPU.md).
//
// The CPU build of ONNX Runtime that scripts/setup.sh installs has no CUDA
// execution provider. `make setup-cuda` (scripts/setup-cuda.sh) installs the
// GPU build (PyPI onnxruntime-gpu) and the CUDA libraries its provider links
// against into one folder, $NWC_CACHE/cuda/lib. InitProvider("cuda") loads
// ONNX Runtime from there instead of the CPU library.
//
// The CUDA provider (libonnxruntime_providers_cuda.so) has no RUNPATH: the
// dynamic loader would look for libcudart, libcublas, ... on
// LD_LIBRARY_PATH, which glibc reads once, at process start (setting it from
// Go changes nothing for this process). Instead of re-executing itself or
// asking the user to export it, nwc loads each library the provider needs
// (read from its ELF dynamic section) by absolute path from that folder,
// with RTLD_GLOBAL, before ONNX Runtime loads the provider: the loader then
// finds them already loaded under their sonames. This is what the
// onnxruntime-gpu Python package does (onnxruntime.preload_dlls). A library
// absent from the folder is looked up on the system path instead (a host
// with CUDA installed system-wide).

// CUDALibraryEnv overrides the ONNX Runtime library used for the CUDA
// provider.
const CUDALibraryEnv = "NWC_ORT_CUDA_LIBRARY"

// cudaProviderLib is the CUDA execution provider's library, which ONNX
// Runtime loads from the folder of its own library.
const cudaProviderLib = "libonnxruntime_providers_cuda.so"

// CUDADir returns the folder scripts/setup-cuda.sh installs into:
// $NWC_CACHE/cuda (default ~/.cache/nwc/cuda).
func CUDADir() string { return filepath.Join(cacheDir(), "cuda") }

// CUDALibrary returns the ONNX Runtime library InitProvider("cuda") loads:
// $NWC_ORT_CUDA_LIBRARY if set; else $ONNXRUNTIME_SHARED_LIBRARY_PATH when a
// CUDA provider library lies beside it (a GPU build the user pointed at);
// else CUDADir()/lib/libonnxruntime.so.
func CUDALibrary() string {
	if p := os.Getenv(CUDALibraryEnv); p != "" {
		return p
	}
	if p := os.Getenv("ONNXRUNTIME_SHARED_LIBRARY_PATH"); p != "" && hasCUDAProvider(p) {
		return p
	}
	return filepath.Join(CUDADir(), "lib", "libonnxruntime.so")
}

// hasCUDAProvider reports whether the CUDA provider library lies beside the
// ONNX Runtime library lib.
func hasCUDAProvider(lib string) bool {
	_, err := os.Stat(filepath.Join(filepath.Dir(lib), cudaProviderLib))
	return err == nil
}

// fallbackHint ends every CUDA error: how to get CUDA, or do without it.
const fallbackHint = "run `make setup-cuda` (docs/GPU.md), or use --provider cpu"

// cudaUnavailable formats an error wrapping ErrProviderUnavailable for what
// `make setup-cuda` installs.
func cudaUnavailable(format string, args ...any) error {
	return fmt.Errorf("%w: cuda: %s; %s", ErrProviderUnavailable, fmt.Sprintf(format, args...), fallbackHint)
}

// noGPU is cudaUnavailable for what no setup can fix: the driver, the GPU.
func noGPU(format string, args ...any) error {
	return fmt.Errorf("%w: cuda: %s; use --provider cpu", ErrProviderUnavailable, fmt.Sprintf(format, args...))
}

// checkCUDALibrary checks the files of a GPU build of ONNX Runtime.
func checkCUDALibrary(lib string) error {
	if _, err := os.Stat(lib); err != nil {
		return cudaUnavailable("no GPU build of ONNX Runtime at %s (%v)", lib, errors.Unwrap(err))
	}
	if !hasCUDAProvider(lib) {
		return cudaUnavailable("%s not found beside %s: that ONNX Runtime is a CPU-only build (the GPU build is the PyPI onnxruntime-gpu wheel)",
			cudaProviderLib, lib)
	}
	return nil
}

// systemLib reports whether soname is part of the C/C++ runtime (always on
// the system, never shipped with CUDA).
func systemLib(soname string) bool {
	for _, p := range []string{"libc.so", "libm.so", "libdl.so", "librt.so", "libpthread.so",
		"libstdc++.so", "libgcc_s.so", "ld-linux", "libz.so"} {
		if strings.HasPrefix(soname, p) {
			return true
		}
	}
	return false
}

// cudaDeps returns the libraries the CUDA provider beside lib links against
// (its DT_NEEDED entries), less the C/C++ runtime, and the driver library
// (libcuda.so.1) apart: the driver comes with the GPU, never from the cache.
func cudaDeps(lib string) (deps []string, err error) {
	pc := filepath.Join(filepath.Dir(lib), cudaProviderLib)
	f, err := elf.Open(pc)
	if err != nil {
		return nil, cudaUnavailable("reading %s: %v", pc, err)
	}
	defer f.Close()
	needed, err := f.ImportedLibraries()
	if err != nil {
		return nil, cudaUnavailable("reading the dynamic section of %s: %v", pc, err)
	}
	for _, n := range needed {
		if systemLib(n) || strings.HasPrefix(n, "libcuda.so") {
			continue
		}
		deps = append(deps, n)
	}
	return deps, nil
}
