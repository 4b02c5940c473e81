//go:build cgo

package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"
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

func TestCachedLM(t *testing.T) {
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
