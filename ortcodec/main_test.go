//go:build cgo

package ortcodec

import (
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"
)

// TestMain fails the run when ORT objects or goroutines leak.
func TestMain(m *testing.M) {
	before := runtime.NumGoroutine()
	code := m.Run()
	if n := liveObjects.Load(); n != 0 && code == 0 {
		fmt.Fprintf(os.Stderr, "ortcodec: %d ONNX Runtime objects not destroyed\n", n)
		code = 1
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before && code == 0 {
		buf := make([]byte, 1<<16)
		fmt.Fprintf(os.Stderr, "ortcodec: %d goroutines leaked:\n%s\n", n-before, buf[:runtime.Stack(buf, true)])
		code = 1
	}
	os.Exit(code)
}
