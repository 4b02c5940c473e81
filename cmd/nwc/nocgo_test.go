//go:build !cgo

package main

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nwc-project/nwc/internal/ortenv"
)

// TestNoCGO: without cgo, the commands that run a model say why they cannot,
// and compress works without calibration.
func TestNoCGO(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	in := filepath.Join(dir, "m.safetensors")
	writeModel(t, in)
	for name, run := range map[string]func() error{
		"eval":        func() error { return runEval(ctx, []string{"--model", in}) },
		"generate":    func() error { return runGenerate(ctx, []string{"--model", in, "--prompt", "hi"}) },
		"bench":       func() error { return runBench(ctx, []string{"rd"}) },
		"bench load":  func() error { return runBench(ctx, []string{"load"}) },
		"bench embed": func() error { return runBench(ctx, []string{"embed"}) },
		"tokenize":    func() error { return runTokenize(ctx, []string{"--model", in}) },
		"calibration": func() error {
			return runCompress(ctx, []string{"--model", in, "--codec", "gptq-g128", "-o", filepath.Join(dir, "c.nwc"), "-q"})
		},
	} {
		_, err := capture(t, run)
		if !errors.Is(err, ortenv.ErrNoCGO) || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
			t.Errorf("%s: want ErrNoCGO, got %v", name, err)
		}
	}
	if _, err := capture(t, func() error {
		return runCompress(ctx, []string{"--model", in, "--codec", "gptq-g128", "--no-calib", "-o", filepath.Join(dir, "g.nwc"), "-q"})
	}); err != nil {
		t.Fatalf("compress --no-calib: %v", err)
	}
}
