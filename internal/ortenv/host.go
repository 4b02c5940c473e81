package ortenv

import (
	"errors"
	"fmt"

	ort "github.com/yalue/onnxruntime_go"
)

// ErrNotInitialized: InitHost found no environment created by the host.
var ErrNotInitialized = errors.New("the host has not initialized ONNX Runtime")

// InitHost adopts the ONNX Runtime environment the host process created:
// nwc then neither initializes nor destroys it.
func InitHost() error {
	mu.Lock()
	defer mu.Unlock()
	if !ort.IsInitialized() {
		return fmt.Errorf("%w (call onnxruntime_go's InitializeEnvironment first, or let nwc initialize it)", ErrNotInitialized)
	}
	if !done {
		done, initErr = true, nil
	}
	return nil
}
