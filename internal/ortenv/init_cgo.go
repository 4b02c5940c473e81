//go:build cgo

package ortenv

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	ort "github.com/yalue/onnxruntime_go"
)

var (
	mu      sync.Mutex
	done    bool
	host    bool
	initErr error
	libUsed string
)

// Init loads the ONNX Runtime shared library and creates the environment.
// libPath "" means DefaultLibrary(). Init is idempotent: only the first call
// does anything, and every call returns the first call's error (nil on
// success), whatever libPath it is given. After InitHost has succeeded, Init
// does nothing and returns nil.
func Init(libPath string) error {
	mu.Lock()
	defer mu.Unlock()
	if done {
		return initErr
	}
	done = true
	if libPath == "" {
		libPath = DefaultLibrary()
	}
	libUsed = libPath
	initErr = initialize(libPath)
	return initErr
}

// InitHost adopts an ONNX Runtime environment the Go host created itself
// (ort.SetSharedLibraryPath, ort.InitializeEnvironment), for a host that
// shares the process with other onnxruntime_go users (hugot, for one). nwc
// then neither initializes nor destroys the environment: later Init calls are
// no-ops returning nil. InitHost returns an error wrapping ErrNotInitialized
// when the environment does not exist yet. Calling it after a successful
// Init (or InitHost) is harmless; after a failed Init it returns that error.
func InitHost() error {
	if !ort.IsInitialized() {
		return fmt.Errorf("%w: the host must call ort.SetSharedLibraryPath and ort.InitializeEnvironment before ortenv.InitHost", ErrNotInitialized)
	}
	mu.Lock()
	defer mu.Unlock()
	if done {
		return initErr
	}
	done, host, initErr = true, true, nil
	return nil
}

// Host reports whether the environment belongs to the host (InitHost).
func Host() bool {
	mu.Lock()
	defer mu.Unlock()
	return host
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

// Initialized reports whether Init (or InitHost) has succeeded.
func Initialized() bool {
	mu.Lock()
	defer mu.Unlock()
	return done && initErr == nil
}

// Library returns the library path the first Init call used ("" before, and
// for a host-owned environment).
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
