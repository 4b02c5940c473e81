//go:build cgo

package ortenv

import (
	"errors"
	"os"
	"strings"
	"testing"
)

func requireInit(t *testing.T) {
	t.Helper()
	if err := Init(""); err != nil {
		if os.Getenv("NWC_REQUIRE_ORT") == "1" {
			t.Fatalf("NWC_REQUIRE_ORT=1: %v", err)
		}
		t.Skipf("ONNX Runtime unavailable: %v", err)
	}
}

func TestInitIdempotent(t *testing.T) {
	requireInit(t)
	// A later call with another path returns the first result.
	if err := Init("/nonexistent/libonnxruntime.so"); err != nil {
		t.Fatalf("second Init: %v", err)
	}
	if v := Version(); v == "" {
		t.Fatal("empty version")
	} else {
		t.Logf("ONNX Runtime %s from %s", v, Library())
	}
}

func TestMissingLibraryError(t *testing.T) {
	err := checkLibrary("/nonexistent/dir/libonnxruntime.so")
	if !errors.Is(err, ErrLibrary) {
		t.Fatalf("want ErrLibrary, got %v", err)
	}
	if want := "/nonexistent/dir/libonnxruntime.so"; !contains(err.Error(), want) {
		t.Fatalf("error does not name the path: %v", err)
	}
}

func TestSessionOptionsCPU(t *testing.T) {
	requireInit(t)
	o, err := SessionOptions("cpu", 1)
	if err != nil {
		t.Fatal(err)
	}
	o.Destroy()
	if _, err := SessionOptions("tpu", 1); err == nil {
		t.Fatal("unknown provider accepted")
	}
}

func TestCUDAFallback(t *testing.T) {
	requireInit(t)
	// On a CPU-only ONNX Runtime build (the npm one setup installs), or with
	// NWC_DISABLE_CUDA=1, CUDA is unavailable: the error must say so and the
	// fallback must produce CPU options.
	o, err := SessionOptions("cuda", 1)
	if err == nil {
		o.Destroy()
		t.Log("CUDA provider available")
		return
	}
	if !errors.Is(err, ErrProviderUnavailable) {
		t.Fatalf("want ErrProviderUnavailable, got %v", err)
	}
	o, used, note, err := SessionOptionsFallback("cuda", 1)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Destroy()
	if used != ProviderCPU || note == "" {
		t.Fatalf("fallback: used %q note %q", used, note)
	}
	t.Log(note)
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
