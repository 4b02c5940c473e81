// Package ortenv owns the one process-wide ONNX Runtime environment that every
// nwc component (runtimes, ONNX codecs) shares, and builds session options for
// the CPU or CUDA execution provider.
//
// ONNX Runtime allows one environment per process, and the binding
// (github.com/yalue/onnxruntime_go) loads the shared library once: call Init
// (any number of times, from any goroutine) before creating sessions or
// tensors; the first call decides the library and every later call returns
// the first call's result.
package ortenv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/nwc-project/nwc/loader/refmodel"
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
	// cannot be loaded or is too old.
	ErrLibrary = errors.New("onnx runtime library unusable")
	// ErrProviderUnavailable is wrapped by SessionOptions when the requested
	// execution provider cannot be enabled (for CUDA: a CPU-only ONNX
	// Runtime build, no GPU, or missing CUDA libraries). Callers fall back to
	// ProviderCPU and tell the user.
	ErrProviderUnavailable = errors.New("execution provider unavailable")
)

var (
	mu      sync.Mutex
	done    bool
	initErr error
	libUsed string
)

// Init loads the ONNX Runtime shared library and creates the environment.
// libPath "" means refmodel.ORTLibrary() ($ONNXRUNTIME_SHARED_LIBRARY_PATH, or
// lib/libonnxruntime.so in the nwc cache). Init is idempotent: only the first
// call does anything, and every call returns the first call's error (nil on
// success), whatever libPath it is given.
func Init(libPath string) error {
	mu.Lock()
	defer mu.Unlock()
	if done {
		return initErr
	}
	done = true
	if libPath == "" {
		libPath = refmodel.ORTLibrary()
	}
	libUsed = libPath
	initErr = initialize(libPath)
	return initErr
}

func initialize(libPath string) error {
	if ort.IsInitialized() {
		// Someone initialized the binding directly; share it.
		return nil
	}
	if err := checkLibrary(libPath); err != nil {
		return err
	}
	ort.SetSharedLibraryPath(libPath)
	if err := ort.InitializeEnvironment(ort.WithLogLevelError()); err != nil {
		msg := err.Error()
		if strings.Contains(msg, "API version") || strings.Contains(msg, "ORT API base") {
			return fmt.Errorf("%w: %s is too old: onnxruntime_go needs ONNX Runtime >= %s (%v)",
				ErrLibrary, libPath, MinVersion, err)
		}
		return fmt.Errorf("%w: loading %s: %v", ErrLibrary, libPath, err)
	}
	return nil
}

// checkLibrary says clearly when the library file is missing.
func checkLibrary(libPath string) error {
	if _, err := os.Stat(libPath); err != nil {
		return fmt.Errorf("%w: ONNX Runtime shared library %s: %v (run `make setup`, or point ONNXRUNTIME_SHARED_LIBRARY_PATH at libonnxruntime.so >= %s)",
			ErrLibrary, libPath, errors.Unwrap(err), MinVersion)
	}
	return nil
}

// Initialized reports whether Init has succeeded.
func Initialized() bool {
	mu.Lock()
	defer mu.Unlock()
	return done && initErr == nil
}

// Library returns the library path the first Init call used ("" before).
func Library() string {
	mu.Lock()
	defer mu.Unlock()
	return libUsed
}

// Version returns the loaded ONNX Runtime version ("" before Init).
func Version() string {
	if !Initialized() {
		return ""
	}
	return ort.GetVersion()
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

// SessionOptions returns session options for provider ("cpu", "cuda"; ""
// means cpu) with intra-op threads (<= 0: ONNX Runtime's default, one per
// physical core) and full graph optimisation. The caller destroys them.
//
// For "cuda", when the provider cannot be appended the error wraps
// ErrProviderUnavailable; the caller may retry with "cpu" and should say so.
// Init must have succeeded first.
func SessionOptions(provider string, threads int) (*ort.SessionOptions, error) {
	provider, err := NormalizeProvider(provider)
	if err != nil {
		return nil, err
	}
	if !Initialized() {
		if err := Init(""); err != nil {
			return nil, err
		}
	}
	o, err := ort.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("onnx runtime session options: %w", err)
	}
	fail := func(err error) (*ort.SessionOptions, error) {
		o.Destroy()
		return nil, err
	}
	if threads > 0 {
		if err := o.SetIntraOpNumThreads(threads); err != nil {
			return fail(fmt.Errorf("onnx runtime: set %d threads: %w", threads, err))
		}
		if err := o.SetInterOpNumThreads(1); err != nil {
			return fail(fmt.Errorf("onnx runtime: set inter-op threads: %w", err))
		}
	}
	if err := o.SetGraphOptimizationLevel(ort.GraphOptimizationLevelEnableAll); err != nil {
		return fail(fmt.Errorf("onnx runtime: set optimisation level: %w", err))
	}
	if provider == ProviderCUDA {
		if err := appendCUDA(o); err != nil {
			return fail(err)
		}
	}
	return o, nil
}

func appendCUDA(o *ort.SessionOptions) error {
	if os.Getenv("NWC_DISABLE_CUDA") == "1" {
		return fmt.Errorf("%w: cuda: disabled by NWC_DISABLE_CUDA=1", ErrProviderUnavailable)
	}
	// ONNX Runtime loads the CUDA provider from a library beside its own;
	// without one (the CPU-only builds) say so without letting ORT log a
	// load failure.
	if lib := Library(); lib != "" {
		pc := filepath.Join(filepath.Dir(lib), "libonnxruntime_providers_cuda.so")
		if _, err := os.Stat(pc); err != nil {
			return fmt.Errorf("%w: cuda: %s not found: the ONNX Runtime at %s is a CPU-only build (a CUDA build is the PyPI onnxruntime-gpu wheel)",
				ErrProviderUnavailable, pc, lib)
		}
	}
	co, err := ort.NewCUDAProviderOptions()
	if err != nil {
		return fmt.Errorf("%w: cuda: %v (the ONNX Runtime at %s has no CUDA provider; a CUDA build is the PyPI onnxruntime-gpu wheel)",
			ErrProviderUnavailable, err, Library())
	}
	defer co.Destroy()
	if err := o.AppendExecutionProviderCUDA(co); err != nil {
		return fmt.Errorf("%w: cuda: %v (the ONNX Runtime at %s has no usable CUDA provider)",
			ErrProviderUnavailable, err, Library())
	}
	return nil
}

// SessionOptionsFallback is SessionOptions that falls back to the CPU when
// the requested provider is unavailable. It returns the provider actually
// used and, after a fallback, a one-line note for the user (else "").
func SessionOptionsFallback(provider string, threads int) (o *ort.SessionOptions, used, note string, err error) {
	o, err = SessionOptions(provider, threads)
	if err == nil {
		used, _ = NormalizeProvider(provider)
		return o, used, "", nil
	}
	if !errors.Is(err, ErrProviderUnavailable) {
		return nil, "", "", err
	}
	o, err2 := SessionOptions(ProviderCPU, threads)
	if err2 != nil {
		return nil, "", "", err2
	}
	return o, ProviderCPU, fmt.Sprintf("%v; falling back to the CPU", err), nil
}
