//go:build cgo

package main

import (
	"context"
	"math"
	"path/filepath"
	"testing"

	"github.com/nwc-project/nwc/internal/ortenv/orttest"
	"github.com/nwc-project/nwc/plugin/llama"
)

// The runtime gives the same logits on a .nwc and on its GGUF and Hugging
// Face exports (q/k rows un-permuted, rotate-half instead of ggml's rotary).
func TestExportsRunLikeTheSource(t *testing.T) {
	orttest.Require(t)
	dir := t.TempDir()
	ctx := context.Background()
	nwc := tinyNWC(t, dir, "--codec", "rtn-g128", "--bits", "4")
	outs := []string{filepath.Join(dir, "x.gguf"), filepath.Join(dir, "hf")}
	for _, out := range outs {
		if _, err := capture(t, func() error { return runDecompress(ctx, []string{nwc, "-q", "-o", out}) }); err != nil {
			t.Fatal(err)
		}
	}
	tokens := []int32{1, 5, 77, 200, 3, 9, 41, 260, 12}
	logits := func(path string) []float32 {
		m, err := llama.Open(path, llama.Options{})
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		defer m.Close()
		l, err := m.Logits(ctx, tokens)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	want := logits(nwc)
	for _, out := range outs {
		got := logits(out)
		var maxDiff, maxAbs float64
		for i := range want {
			maxDiff = math.Max(maxDiff, math.Abs(float64(got[i]-want[i])))
			maxAbs = math.Max(maxAbs, math.Abs(float64(want[i])))
		}
		if len(got) != len(want) || maxDiff > 1e-5*maxAbs {
			t.Errorf("%s: max |diff| %g (max |logit| %g)", filepath.Base(out), maxDiff, maxAbs)
		}
	}
}
