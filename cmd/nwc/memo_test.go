//go:build cgo

package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// countLM returns logits derived from the tokens and counts its calls.
type countLM struct{ calls int }

func (c *countLM) Vocab() int { return 3 }

func (c *countLM) Logits(_ context.Context, tokens []int32) ([]float32, error) {
	c.calls++
	out := make([]float32, 0, 3*len(tokens))
	for i, t := range tokens {
		out = append(out, float32(t), float32(i), float32(t)*0.5-float32(i))
	}
	return out, nil
}

// logitsOf asks m for every window's logits, in order, and keeps copies.
func logitsOf(t *testing.T, m *memoLM, wins [][]int32) [][]float32 {
	t.Helper()
	var out [][]float32
	for _, w := range wins {
		l, err := m.Logits(context.Background(), w)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, slices.Clone(l))
	}
	return out
}

// TestMemoLMSpills: windows past the memory budget go to files in the
// folder and come back equal; every window is computed once.
func TestMemoLMSpills(t *testing.T) {
	lm := &countLM{}
	dir := t.TempDir()
	m := newMemoLM(lm, dir)
	m.budget = 3 * 4 * 4 // one window of 4 tokens in memory
	wins := [][]int32{{1, 2, 3, 4}, {5, 6, 7, 8}, {9, 10, 11, 12}}
	first := logitsOf(t, m, wins)
	files, _ := filepath.Glob(filepath.Join(dir, "ref-logits-*.f32"))
	if len(files) != 2 {
		t.Fatalf("%d spilled files, want 2", len(files))
	}
	for i, w := range wins {
		l, err := m.Logits(context.Background(), w)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(l, first[i]) {
			t.Fatalf("window %d: %v, want %v", i, l, first[i])
		}
	}
	if lm.calls != len(wins) {
		t.Fatalf("%d model calls, want %d", lm.calls, len(wins))
	}
	os.Remove(files[0])
	if _, err := m.Logits(context.Background(), wins[1]); err == nil {
		if _, err2 := m.Logits(context.Background(), wins[2]); err2 == nil {
			t.Fatal("a removed spill file was not reported")
		}
	}
}

// TestMemoLMRelease: after release the computed windows still come back
// (from memory and from spill files) and an unseen window is an error.
func TestMemoLMRelease(t *testing.T) {
	lm := &countLM{}
	m := newMemoLM(lm, t.TempDir())
	m.budget = 3 * 4 * 4
	wins := [][]int32{{1, 2, 3, 4}, {5, 6, 7, 8}}
	first := logitsOf(t, m, wins)
	m.release()
	for i, w := range wins {
		l, err := m.Logits(context.Background(), w)
		if err != nil || !slices.Equal(l, first[i]) {
			t.Fatalf("window %d after release: %v, %v", i, l, err)
		}
	}
	if m.Vocab() != 3 {
		t.Fatalf("Vocab() = %d after release", m.Vocab())
	}
	if _, err := m.Logits(context.Background(), []int32{9, 9, 9, 9}); err == nil {
		t.Fatal("an unseen window after release was not refused")
	}
	if lm.calls != len(wins) {
		t.Fatalf("%d model calls, want %d", lm.calls, len(wins))
	}
}

// TestSpillFileChunks: a spill file of several chunks (and a partial last
// one) reads back equal; a file of another length is refused.
func TestSpillFileChunks(t *testing.T) {
	v := make([]float32, 2*spillChunk/4+5)
	for i := range v {
		v[i] = float32(i)*0.25 - 7
	}
	p := filepath.Join(t.TempDir(), "x.f32")
	if err := writeF32File(p, v); err != nil {
		t.Fatal(err)
	}
	got, err := readF32File(p, len(v))
	if err != nil || !slices.Equal(got, v) {
		t.Fatalf("round trip: equal %v, err %v", slices.Equal(got, v), err)
	}
	if _, err := readF32File(p, len(v)-1); err == nil {
		t.Fatal("a file one value too long was accepted")
	}
}
