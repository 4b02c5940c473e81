//go:build cgo

package ortenv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	ort "github.com/yalue/onnxruntime_go"
)

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
