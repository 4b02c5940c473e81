// Package orttest is the test helper for tests that need ONNX Runtime.
package orttest

import (
	"os"
	"testing"

	"github.com/nwc-project/nwc/internal/ortenv"
)

// Require initializes the process-wide ONNX Runtime environment, or skips the
// test with the reason when the library is unusable. With NWC_REQUIRE_ORT=1 a
// missing library fails the test instead.
func Require(t testing.TB) {
	t.Helper()
	if err := ortenv.Init(""); err != nil {
		if os.Getenv("NWC_REQUIRE_ORT") == "1" {
			t.Fatalf("NWC_REQUIRE_ORT=1: %v", err)
		}
		t.Skipf("ONNX Runtime unavailable: %v", err)
	}
}
