//go:build cgo

package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/nwc-project/nwc/eval"
)

type countingLM struct{ calls int }

func (c *countingLM) Vocab() int { return 3 }
func (c *countingLM) Logits(_ context.Context, tokens []int32) ([]float32, error) {
	c.calls++
	out := make([]float32, 3*len(tokens))
	for i, t := range tokens {
		out[3*i+int(t)%3] = float32(t) + 0.25
	}
	return out, nil
}

// newTestCache returns a reference cache in a temporary folder over a
// countingLM, the folder, and that LM.
func newTestCache(t *testing.T) (*cachedLM, string, *countingLM) {
	t.Helper()
	dir := t.TempDir()
	ref := filepath.Join(dir, "ref.gguf")
	if err := os.WriteFile(ref, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	inner := &countingLM{}
	c, err := newCachedLM(inner, filepath.Join(dir, "cache"), ref, "cpu")
	if err != nil {
		t.Fatal(err)
	}
	return c, dir, inner
}

func TestCachedLM(t *testing.T) {
	c, dir, inner := newTestCache(t)
	ctx := context.Background()
	a, _ := c.Logits(ctx, []int32{1, 2, 5})
	b, err := c.Logits(ctx, []int32{1, 2, 5})
	if err != nil || inner.calls != 1 {
		t.Fatalf("second call: %v, %d inner calls", err, inner.calls)
	}
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("cached logits differ at %d: %v vs %v", i, a[i], b[i])
		}
	}
	if _, err := c.Logits(ctx, []int32{1, 2, 6}); err != nil || inner.calls != 2 {
		t.Fatalf("other window: %v, %d inner calls", err, inner.calls)
	}
	// A truncated cache file is recomputed, not trusted.
	p := c.path([]int32{1, 2, 5})
	if err := os.Truncate(p, 8); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Logits(ctx, []int32{1, 2, 5}); err != nil || inner.calls != 3 {
		t.Fatalf("truncated file: %v, %d inner calls", err, inner.calls)
	}
	if _, err := newCachedLM(inner, dir, filepath.Join(dir, "missing.gguf"), "cpu"); err == nil {
		t.Error("missing reference accepted")
	}
}

func TestCachedLMStats(t *testing.T) {
	c, _, inner := newTestCache(t)
	ctx := context.Background()
	win := []int32{4, 0, 7, 2}
	logits, st, err := c.LogitsStats(ctx, win)
	if err != nil {
		t.Fatal(err)
	}
	want, err := eval.Stats(logits, 3, 1)
	if err != nil {
		t.Fatal(err)
	}
	check := func(what string, st []eval.RowStats) {
		t.Helper()
		if !slices.Equal(st, want) {
			t.Fatalf("%s: stats %+v, want %+v", what, st, want)
		}
	}
	check("computed", st)
	p := c.path(win) + ".stats"
	if fi, err := os.Stat(p); err != nil || fi.Size() != statsRecord*int64(len(win)) {
		t.Fatalf("stats file: %v %v", fi, err)
	}
	_, st, err = c.LogitsStats(ctx, win)
	if err != nil || inner.calls != 1 {
		t.Fatalf("cached: %v, %d inner calls", err, inner.calls)
	}
	check("cached", st)
	// A stats file naming an argmax outside the vocabulary, or truncated,
	// is computed again from the logits, not trusted.
	data, _ := os.ReadFile(p)
	data[16] = 9
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	_, st, err = c.LogitsStats(ctx, win)
	check("after corruption", st)
	if err := os.Truncate(p, 7); err != nil {
		t.Fatal(err)
	}
	_, st, err = c.LogitsStats(ctx, win)
	check("after truncation", st)
	if err != nil || inner.calls != 1 {
		t.Fatalf("recomputed stats: %v, %d inner calls", err, inner.calls)
	}
}
