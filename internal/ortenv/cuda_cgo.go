//go:build cgo

package ortenv

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

// nwc_dlopen loads path with its symbols global; on failure *err is a copy
// of dlerror() (the caller frees it).
static void *nwc_dlopen(const char *path, int global, char **err) {
	dlerror();
	void *h = dlopen(path, RTLD_NOW | (global ? RTLD_GLOBAL : RTLD_LOCAL));
	if (!h) {
		const char *e = dlerror();
		*err = strdup(e ? e : "unknown dlopen error");
	}
	return h;
}

typedef int (*nwc_cu_init_t)(unsigned int);
typedef int (*nwc_cu_int_t)(int *);
typedef int (*nwc_cu_errstr_t)(int, const char **);

// nwc_cuda_probe asks the driver (libcuda.so.1, handle h) for its CUDA
// version and the number of devices. It returns the failing call's CUresult
// (0: success) and names the call in *what.
static int nwc_cuda_probe(void *h, int *version, int *count, const char **what) {
	nwc_cu_init_t cu_init = (nwc_cu_init_t)dlsym(h, "cuInit");
	nwc_cu_int_t cu_version = (nwc_cu_int_t)dlsym(h, "cuDriverGetVersion");
	nwc_cu_int_t cu_count = (nwc_cu_int_t)dlsym(h, "cuDeviceGetCount");
	if (!cu_init || !cu_version || !cu_count) {
		*what = "dlsym(cuInit, cuDriverGetVersion, cuDeviceGetCount)";
		return -1;
	}
	*what = "cuDriverGetVersion";
	int r = cu_version(version);
	if (r != 0) return r;
	*what = "cuInit";
	r = cu_init(0);
	if (r != 0) return r;
	*what = "cuDeviceGetCount";
	return cu_count(count);
}

static const char *nwc_cuda_error(void *h, int code) {
	nwc_cu_errstr_t f = (nwc_cu_errstr_t)dlsym(h, "cuGetErrorString");
	const char *s = NULL;
	if (!f || f(code, &s) != 0 || !s) return "";
	return s;
}
*/
import "C"

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	ort "github.com/yalue/onnxruntime_go"
)

// InitProvider is Init with the ONNX Runtime library provider needs: for
// "cpu" (or "") it is Init(""); for "cuda" it loads the GPU build
// (CUDALibrary), after checking that the build, the NVIDIA driver, a GPU
// and every CUDA library its provider links against are there, and loads
// those libraries (see cuda.go). A failed check returns an error wrapping
// ErrProviderUnavailable that names what is missing and leaves ONNX Runtime
// uninitialized, so the process may still Init the CPU library; nwc never
// falls back on its own.
//
// When the environment already exists (an earlier Init, or a host's) and
// its library has no CUDA provider, InitProvider("cuda") fails the same way:
// the provider must be chosen before ONNX Runtime is first used.
func InitProvider(provider string) error {
	p, err := NormalizeProvider(provider)
	if err != nil {
		return err
	}
	if p == ProviderCPU {
		return Init("")
	}
	mu.Lock()
	defer mu.Unlock()
	if done {
		if initErr != nil || host || hasCUDAProvider(libUsed) {
			return initErr
		}
		return cudaUnavailable("ONNX Runtime was already loaded from %s, a CPU-only build (choose the provider before ONNX Runtime is first used)", libUsed)
	}
	if ort.IsInitialized() {
		// Someone initialized the binding directly: its library decides.
		done, initErr = true, nil
		return nil
	}
	lib := CUDALibrary()
	if err := prepareCUDA(lib); err != nil {
		return err
	}
	done, libUsed = true, lib
	initErr = initialize(lib)
	return initErr
}

// CUDAInfo is what the driver reported (CUDAProbe).
type CUDAInfo struct {
	// DriverVersion is the CUDA version the driver supports, as CUDA
	// encodes it (1000*major + 10*minor: 13000 is 13.0).
	DriverVersion int
	// Devices is the number of CUDA devices visible.
	Devices int
}

// CUDAProbe loads the NVIDIA driver library and asks it for its version and
// the number of GPUs. The error wraps ErrProviderUnavailable and says what
// is missing: the driver, or a GPU.
func CUDAProbe() (CUDAInfo, error) {
	h, err := dlopen("libcuda.so.1", false)
	if err != nil {
		return CUDAInfo{}, noGPU("no NVIDIA driver: libcuda.so.1 cannot be loaded (%v); this machine has no NVIDIA GPU, or its driver is not installed or not visible", err)
	}
	var version, count C.int
	var what *C.char
	if r := C.nwc_cuda_probe(h, &version, &count, &what); r != 0 {
		name := C.GoString(what)
		msg := C.GoString(C.nwc_cuda_error(h, r))
		if r == 100 { // CUDA_ERROR_NO_DEVICE
			return CUDAInfo{}, noGPU("no CUDA GPU found: %s returned %d (%s); check nvidia-smi and CUDA_VISIBLE_DEVICES", name, int(r), msg)
		}
		return CUDAInfo{}, noGPU("the NVIDIA driver failed: %s returned %d (%s)", name, int(r), msg)
	}
	info := CUDAInfo{DriverVersion: int(version), Devices: int(count)}
	if info.Devices == 0 {
		return info, noGPU("no CUDA GPU found (driver supports CUDA %s); check nvidia-smi and CUDA_VISIBLE_DEVICES", cudaVersionString(info.DriverVersion))
	}
	return info, nil
}

func cudaVersionString(v int) string { return fmt.Sprintf("%d.%d", v/1000, v%1000/10) }

// prepareCUDA checks the GPU build at lib, the driver and a GPU, and loads
// the CUDA libraries its provider links against.
func prepareCUDA(lib string) error {
	if os.Getenv("NWC_DISABLE_CUDA") == "1" {
		return cudaUnavailable("disabled by NWC_DISABLE_CUDA=1")
	}
	if err := checkCUDALibrary(lib); err != nil {
		return err
	}
	deps, err := cudaDeps(lib)
	if err != nil {
		return err
	}
	info, err := CUDAProbe()
	if err != nil {
		return err
	}
	if need := runtimeMajor(deps); need > 0 && info.DriverVersion/1000 < need {
		return noGPU("the NVIDIA driver supports CUDA %s but the ONNX Runtime at %s is built for CUDA %d (update the driver, or install the build for the driver's CUDA: NWC_CUDA_FLAVOR=cu12 make setup-cuda)",
			cudaVersionString(info.DriverVersion), lib, need)
	}
	return preload(filepath.Dir(lib), deps)
}

// runtimeMajor is the CUDA major version of libcudart.so.N in deps (0 if
// absent).
func runtimeMajor(deps []string) int {
	for _, d := range deps {
		if v, ok := strings.CutPrefix(d, "libcudart.so."); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	return 0
}

// preload loads each of deps from dir (or, when dir lacks it, from the
// system's library path) with RTLD_GLOBAL. Libraries that fail because a
// dependency is not loaded yet are retried after the others; what still
// fails is reported, every library by name. The handles stay open for the
// life of the process, like ONNX Runtime's own.
func preload(dir string, deps []string) error {
	pending := deps
	var failed []string
	for len(pending) > 0 {
		var next []string
		failed = failed[:0]
		for _, d := range pending {
			path := filepath.Join(dir, d)
			if _, err := os.Stat(path); err != nil {
				path = d // system library path
			}
			if _, err := dlopen(path, true); err != nil {
				next = append(next, d)
				failed = append(failed, fmt.Sprintf("%s (%v)", d, err))
			}
		}
		if len(next) == len(pending) {
			break
		}
		pending = next
	}
	if len(failed) > 0 {
		return cudaUnavailable("CUDA libraries the provider needs cannot be loaded from %s nor the system library path: %s",
			dir, strings.Join(failed, "; "))
	}
	return nil
}

// dlopen loads path (RTLD_NOW; RTLD_GLOBAL when global).
func dlopen(path string, global bool) (unsafe.Pointer, error) {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	g := C.int(0)
	if global {
		g = 1
	}
	var cerr *C.char
	h := C.nwc_dlopen(cpath, g, &cerr)
	if h == nil {
		defer C.free(unsafe.Pointer(cerr))
		return nil, fmt.Errorf("%s", C.GoString(cerr))
	}
	return h, nil
}
