//go:build !cgo

package ortenv

import (
	"errors"
	"strings"
	"testing"
)

func TestNoCGO(t *testing.T) {
	err := Init("")
	if !errors.Is(err, ErrLibrary) || !errors.Is(err, ErrNoCGO) {
		t.Fatalf("Init: want ErrLibrary and ErrNoCGO, got %v", err)
	}
	if !strings.Contains(err.Error(), "CGO_ENABLED=0") {
		t.Fatalf("Init error does not say why: %v", err)
	}
	if err := InitHost(); !errors.Is(err, ErrNoCGO) || !errors.Is(err, ErrNotInitialized) {
		t.Fatalf("InitHost: want ErrNoCGO and ErrNotInitialized, got %v", err)
	}
	if Initialized() || Version() != "" || Library() != "" || Host() {
		t.Fatal("no-cgo build reports an environment")
	}
}
