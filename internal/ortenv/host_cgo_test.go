//go:build cgo

package ortenv

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	ort "github.com/yalue/onnxruntime_go"
)

// hostChildEnv marks the child process TestInitHost starts: ortenv's state
// and the ONNX Runtime environment are process-wide, so the host scenario
// runs in a fresh process.
const hostChildEnv = "NWC_ORTENV_HOST_CHILD"

// TestInitHost runs TestHostChild in a fresh copy of the test binary.
func TestInitHost(t *testing.T) {
	if err := checkLibrary(DefaultLibrary()); err != nil {
		if os.Getenv("NWC_REQUIRE_ORT") == "1" {
			t.Fatalf("NWC_REQUIRE_ORT=1: %v", err)
		}
		t.Skipf("ONNX Runtime unavailable: %v", err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHostChild$", "-test.v")
	cmd.Env = append(os.Environ(), hostChildEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("host child: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "--- PASS: TestHostChild") {
		t.Fatalf("host child did not run:\n%s", out)
	}
	t.Logf("host child:\n%s", out)
}

// TestHostChild plays a Go host (hugot, say) that owns the environment.
func TestHostChild(t *testing.T) {
	if os.Getenv(hostChildEnv) != "1" {
		t.Skip("run by TestInitHost in a fresh process")
	}
	if ort.IsInitialized() {
		t.Fatal("environment initialized before the host made it")
	}
	if err := InitHost(); !errors.Is(err, ErrNotInitialized) {
		t.Fatalf("InitHost before the host's init: want ErrNotInitialized, got %v", err)
	}
	if Initialized() {
		t.Fatal("failed InitHost left ortenv initialized")
	}

	// The host creates the environment itself.
	ort.SetSharedLibraryPath(DefaultLibrary())
	if err := ort.InitializeEnvironment(ort.WithLogLevelError()); err != nil {
		t.Fatalf("host InitializeEnvironment: %v", err)
	}
	if err := InitHost(); err != nil {
		t.Fatalf("InitHost: %v", err)
	}
	if !Host() || !Initialized() {
		t.Fatalf("after InitHost: Host %v Initialized %v", Host(), Initialized())
	}
	// Init is now a no-op, whatever the path.
	if err := Init("/nonexistent/libonnxruntime.so"); err != nil {
		t.Fatalf("Init after InitHost: %v", err)
	}
	if err := Init(""); err != nil {
		t.Fatalf("Init after InitHost: %v", err)
	}
	if v := Version(); v == "" {
		t.Fatal("empty version")
	} else {
		t.Logf("host-owned ONNX Runtime %s", v)
	}
	o, err := SessionOptions(ProviderCPU, 1)
	if err != nil {
		t.Fatalf("SessionOptions in the host's environment: %v", err)
	}
	o.Destroy()
	if !ort.IsInitialized() {
		t.Fatal("nwc destroyed the host's environment")
	}
	// The host, not nwc, destroys it.
	if err := ort.DestroyEnvironment(); err != nil {
		t.Fatalf("host DestroyEnvironment: %v", err)
	}
}
