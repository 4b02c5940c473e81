package ortenv

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestDefaultLibrary(t *testing.T) {
	t.Setenv("NWC_CACHE", "/c")
	t.Setenv("ONNXRUNTIME_SHARED_LIBRARY_PATH", "")
	if got, want := DefaultLibrary(), filepath.Join("/c", "lib", "libonnxruntime.so"); got != want {
		t.Fatalf("DefaultLibrary() = %q, want %q", got, want)
	}
	t.Setenv("ONNXRUNTIME_SHARED_LIBRARY_PATH", "/x/libort.so")
	if got := DefaultLibrary(); got != "/x/libort.so" {
		t.Fatalf("DefaultLibrary() = %q, want the env override", got)
	}
	t.Setenv("ONNXRUNTIME_SHARED_LIBRARY_PATH", "")
	t.Setenv("NWC_CACHE", "")
	if got, want := DefaultLibrary(), filepath.Join(".cache", "nwc", "lib", "libonnxruntime.so"); !strings.HasSuffix(got, want) {
		t.Fatalf("DefaultLibrary() = %q, want ~/%s", got, want)
	}
}

func TestNormalizeProvider(t *testing.T) {
	for in, want := range map[string]string{"": ProviderCPU, " CPU ": ProviderCPU, "cuda": ProviderCUDA, "GPU": ProviderCUDA} {
		got, err := NormalizeProvider(in)
		if err != nil || got != want {
			t.Errorf("NormalizeProvider(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := NormalizeProvider("tpu"); err == nil {
		t.Error("tpu accepted")
	}
}
