// Package ortenv owns the one process-wide ONNX Runtime environment that every
// nwc component (runtimes, ONNX codecs) shares, and builds session options for
// the CPU or CUDA execution provider.
//
// ONNX Runtime allows one environment per process, and the binding
// (github.com/yalue/onnxruntime_go) loads the shared library once: call Init
// (any number of times, from any goroutine) before creating sessions or
// tensors; the first call decides the library and every later call returns
// the first call's result.
//
// A Go host that creates the environment itself (for example one that also
// uses hugot) calls ort.SetSharedLibraryPath and ort.InitializeEnvironment,
// then InitHost: nwc then uses that environment and never initializes it
// again. nwc never destroys the environment (it never calls
// ort.DestroyEnvironment, whoever created it): the environment lives until
// the process exits, or until the host that created it destroys it after it
// has finished with nwc.
//
// ONNX Runtime needs cgo. In a build with CGO_ENABLED=0 the package still
// compiles: Init and InitHost return errors wrapping ErrNoCGO (and
// ErrLibrary), Initialized reports false and Version returns "". The
// provider names, NormalizeProvider and DefaultLibrary work in both builds.
package ortenv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// MinVersion is the oldest ONNX Runtime release the binding works with
// (onnxruntime_go v1.27.0 asks for ORT C API version 24).
const MinVersion = "1.24"

// Provider names accepted by SessionOptions.
const (
	ProviderCPU  = "cpu"
	ProviderCUDA = "cuda"
)

var (
	// ErrLibrary is wrapped by Init when the shared library is missing,
	// cannot be loaded or is too old, and in a build without cgo.
	ErrLibrary = errors.New("onnx runtime library unusable")
	// ErrProviderUnavailable is wrapped by SessionOptions when the requested
	// execution provider cannot be enabled (for CUDA: a CPU-only ONNX
	// Runtime build, no GPU, or missing CUDA libraries). Callers fall back to
	// ProviderCPU and tell the user.
	ErrProviderUnavailable = errors.New("execution provider unavailable")
	// ErrNotInitialized is wrapped by InitHost when the host has not created
	// the ONNX Runtime environment.
	ErrNotInitialized = errors.New("onnx runtime environment not initialized")
	// ErrNoCGO is wrapped by Init and InitHost (and by the commands that need
	// ONNX Runtime) in a build without cgo.
	ErrNoCGO = errors.New("this build of nwc has no ONNX Runtime (built with CGO_ENABLED=0); rebuild with cgo enabled")
)

// DefaultLibrary returns the ONNX Runtime shared library Init("") loads:
// $ONNXRUNTIME_SHARED_LIBRARY_PATH, else $NWC_CACHE/lib/libonnxruntime.so,
// else ~/.cache/nwc/lib/libonnxruntime.so (the layout scripts/setup.sh
// installs; see loader/refmodel). Without a home directory the cache is
// $TMPDIR/nwc-cache.
func DefaultLibrary() string {
	if p := os.Getenv("ONNXRUNTIME_SHARED_LIBRARY_PATH"); p != "" {
		return p
	}
	return filepath.Join(cacheDir(), "lib", "libonnxruntime.so")
}

// cacheDir is refmodel.CacheDir, repeated here so that this low-level package
// does not import loader/refmodel.
func cacheDir() string {
	if d := os.Getenv("NWC_CACHE"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		return filepath.Join(os.TempDir(), "nwc-cache")
	}
	return filepath.Join(home, ".cache", "nwc")
}

// NormalizeProvider maps "" to ProviderCPU, lower-cases the name and checks it.
func NormalizeProvider(p string) (string, error) {
	p = strings.ToLower(strings.TrimSpace(p))
	switch p {
	case "", ProviderCPU:
		return ProviderCPU, nil
	case ProviderCUDA, "gpu":
		return ProviderCUDA, nil
	}
	return "", fmt.Errorf("unknown execution provider %q (want %q or %q)", p, ProviderCPU, ProviderCUDA)
}
