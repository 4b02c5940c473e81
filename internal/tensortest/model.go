package tensortest

import (
	"os"
	"testing"

	"github.com/nwc-project/nwc/loader/refmodel"
)

// RequireModel skips t when the reference model name is not cached (make
// setup), or fails it under NWC_REQUIRE_MODELS=1.
func RequireModel(t testing.TB, name string) {
	t.Helper()
	m, err := refmodel.Lookup(name)
	if err == nil {
		_, err = os.Stat(m.File)
	}
	if err != nil {
		if os.Getenv("NWC_REQUIRE_MODELS") == "1" {
			t.Fatalf("NWC_REQUIRE_MODELS=1: %v", err)
		}
		t.Skipf("%s not cached (make setup): %v", name, err)
	}
}
