//go:build cgo

package ortenv

import (
	"errors"
	"fmt"
	"os"

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
		if err := InitProvider(provider); err != nil {
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

// TF32Env, set to 1, lets the CUDA provider use TF32 tensor cores for
// float32 matrix products (faster, about 1e-3 relative error). By default
// TF32 is off, so that CUDA decodes agree with the CPU to about 1e-6.
const TF32Env = "NWC_CUDA_TF32"

// CUDADeviceEnv selects the GPU (device_id; default 0).
const CUDADeviceEnv = "NWC_CUDA_DEVICE"

// cudaProviderOptions are the CUDA provider's options nwc sets.
func cudaProviderOptions() map[string]string {
	m := map[string]string{"use_tf32": "0", "device_id": "0"}
	if os.Getenv(TF32Env) == "1" {
		m["use_tf32"] = "1"
	}
	if d := os.Getenv(CUDADeviceEnv); d != "" {
		m["device_id"] = d
	}
	return m
}

func appendCUDA(o *ort.SessionOptions) error {
	if os.Getenv("NWC_DISABLE_CUDA") == "1" {
		return cudaUnavailable("disabled by NWC_DISABLE_CUDA=1")
	}
	// ONNX Runtime loads the CUDA provider from a library beside its own;
	// without one (the CPU-only builds) say so without letting ORT log a
	// load failure.
	if lib := Library(); lib != "" && !hasCUDAProvider(lib) {
		return cudaUnavailable("%s not found beside %s: ONNX Runtime was loaded from a CPU-only build (choose the provider before ONNX Runtime is first used)",
			cudaProviderLib, lib)
	}
	co, err := ort.NewCUDAProviderOptions()
	if err != nil {
		return cudaUnavailable("%v (the ONNX Runtime at %s has no CUDA provider)", err, Library())
	}
	defer co.Destroy()
	if err := co.Update(cudaProviderOptions()); err != nil {
		return cudaUnavailable("setting the provider options %v: %v", cudaProviderOptions(), err)
	}
	if err := o.AppendExecutionProviderCUDA(co); err != nil {
		return cudaUnavailable("%v (the ONNX Runtime at %s has no usable CUDA provider)", err, Library())
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

// ExternalDataFolderKey is ONNX Runtime's session config key for the folder
// that a model created from bytes reads its external data files from
// (relative locations resolve against it).
const ExternalDataFolderKey = "session.model_external_initializers_file_folder_path"

// SetExternalDataFolder tells a session created from model bytes where the
// files of its external initializers are.
func SetExternalDataFolder(o *ort.SessionOptions, dir string) error {
	if err := o.AddSessionConfigEntry(ExternalDataFolderKey, dir); err != nil {
		return fmt.Errorf("onnx runtime: external data folder %s: %w", dir, err)
	}
	return nil
}
