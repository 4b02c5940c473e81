package entropy

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestMain fails the run when goroutines leak.
func TestMain(m *testing.M) {
	before := runtime.NumGoroutine()
	code := m.Run()
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	buf := make([]byte, 1<<16)
	stacks := string(buf[:runtime.Stack(buf, true)])
	// The fuzzing engine (go test -fuzz) leaves its signal.Notify goroutine.
	leaked := runtime.NumGoroutine() - before - strings.Count(stacks, "os/signal.loop")
	if leaked > 0 && code == 0 {
		fmt.Fprintf(os.Stderr, "entropy: %d goroutines leaked:\n%s\n", leaked, stacks)
		code = 1
	}
	os.Exit(code)
}
