//go:build cgo

package ortenv

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// wantUnavailable checks that err wraps ErrProviderUnavailable, contains
// each of parts and tells the user how to do without CUDA.
func wantUnavailable(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatal("no error")
	}
	if !errors.Is(err, ErrProviderUnavailable) {
		t.Fatalf("does not wrap ErrProviderUnavailable: %v", err)
	}
	for _, p := range append(parts, "--provider cpu") {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error does not mention %q: %v", p, err)
		}
	}
	t.Logf("error: %v", err)
}

func TestCUDAMissingBuild(t *testing.T) {
	dir := t.TempDir()
	wantUnavailable(t, checkCUDALibrary(filepath.Join(dir, "libonnxruntime.so")), "no GPU build of ONNX Runtime", dir, "make setup-cuda")
	// A library without the CUDA provider beside it: a CPU-only build.
	lib := filepath.Join(dir, "libonnxruntime.so")
	if err := os.WriteFile(lib, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	wantUnavailable(t, checkCUDALibrary(lib), "CPU-only build", "onnxruntime-gpu")
}

func TestCUDALibrarySelection(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("NWC_CACHE", dir)
	t.Setenv(CUDALibraryEnv, "")
	t.Setenv("ONNXRUNTIME_SHARED_LIBRARY_PATH", "/cpu/libonnxruntime.so")
	if got, want := CUDALibrary(), filepath.Join(dir, "cuda", "lib", "libonnxruntime.so"); got != want {
		t.Fatalf("CUDALibrary() = %q, want %q (a CPU library in ONNXRUNTIME_SHARED_LIBRARY_PATH is not used for cuda)", got, want)
	}
	// A GPU build the user pointed ONNXRUNTIME_SHARED_LIBRARY_PATH at.
	gpu := filepath.Join(dir, "gpu")
	if err := os.MkdirAll(gpu, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(gpu, cudaProviderLib), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("ONNXRUNTIME_SHARED_LIBRARY_PATH", filepath.Join(gpu, "libonnxruntime.so"))
	if got := CUDALibrary(); got != filepath.Join(gpu, "libonnxruntime.so") {
		t.Fatalf("CUDALibrary() = %q, want the GPU build in ONNXRUNTIME_SHARED_LIBRARY_PATH", got)
	}
	t.Setenv(CUDALibraryEnv, "/x/libort.so")
	if got := CUDALibrary(); got != "/x/libort.so" {
		t.Fatalf("CUDALibrary() = %q, want the %s override", got, CUDALibraryEnv)
	}
}

func TestPreloadMissing(t *testing.T) {
	err := preload(t.TempDir(), []string{"libnwc_no_such_cuda_lib.so.99"})
	wantUnavailable(t, err, "libnwc_no_such_cuda_lib.so.99", "cannot be loaded")
}

func TestRuntimeMajor(t *testing.T) {
	if got := runtimeMajor([]string{"libcublas.so.13", "libcudart.so.13"}); got != 13 {
		t.Fatalf("runtimeMajor = %d, want 13", got)
	}
	if got := runtimeMajor([]string{"libcublas.so.12"}); got != 0 {
		t.Fatalf("runtimeMajor = %d, want 0", got)
	}
}

// TestCUDAUnavailable: on a machine without a GPU (or without `make
// setup-cuda`), asking for CUDA fails with an error that says what is
// missing and how to fall back; with a GPU and the setup, it works.
func TestCUDAUnavailable(t *testing.T) {
	lib := CUDALibrary()
	err := prepareCUDA(lib)
	if _, statErr := os.Stat(lib); statErr != nil {
		wantUnavailable(t, err, "no GPU build of ONNX Runtime", lib)
		return
	}
	deps, derr := cudaDeps(lib)
	if derr != nil {
		t.Fatal(derr)
	}
	t.Logf("CUDA provider beside %s needs %v", lib, deps)
	if len(deps) == 0 || runtimeMajor(deps) == 0 {
		t.Fatalf("no CUDA runtime among the provider's dependencies %v", deps)
	}
	if _, perr := CUDAProbe(); perr != nil {
		// No driver or no GPU here: prepareCUDA must fail the same way.
		wantUnavailable(t, err)
		if strings.Contains(err.Error(), "make setup-cuda") {
			t.Errorf("a missing driver or GPU is no setup problem: %v", err)
		}
		if !strings.Contains(err.Error(), "NVIDIA driver") && !strings.Contains(err.Error(), "no CUDA GPU") {
			t.Fatalf("error does not say the driver or the GPU is missing: %v", err)
		}
		return
	}
	if err != nil {
		t.Fatalf("a GPU and the GPU build are here, but: %v", err)
	}
}

// TestInitProviderCUDA: whatever the machine, InitProvider("cuda") either
// works or fails with ErrProviderUnavailable, and a CUDA failure before the
// first Init leaves the CPU library usable.
func TestInitProviderCUDA(t *testing.T) {
	err := InitProvider("cuda")
	if err == nil {
		t.Logf("CUDA: ONNX Runtime %s from %s", Version(), Library())
		return
	}
	wantUnavailable(t, err)
	requireInit(t)
}
