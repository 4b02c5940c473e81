//go:build cgo

package llama

import (
	"context"
	"math"
	"os"
	"sort"
	"testing"
	"time"

	"github.com/nwc-project/nwc/internal/ortenv/orttest"
	"github.com/nwc-project/nwc/loader/refmodel"
)

// Token ids from the GGUF's own tokenizer (transformers' GGUF loader on
// SmolLM2-135M-Instruct.Q4_1.gguf).
var (
	// "The capital of France is"
	franceIDs = []int32{504, 3575, 282, 4649, 314}
	parisID   = int32(7042) // " Paris"
	// "The quick brown fox jumps over the lazy dog. One, two, three, four, five, six, seven"
	sentenceIDs = []int32{504, 2365, 6354, 16438, 27003, 690, 260, 23790, 2767, 30, 1963, 28, 827, 28, 1296, 28, 1876, 28, 2531, 28, 2976, 28, 4962}
	commaID     = int32(28)
	sevenID     = int32(4962)
)

func requireSmolLM2(t *testing.T) {
	t.Helper()
	if _, err := refmodel.Lookup("smollm2-135m"); err != nil {
		if os.Getenv("NWC_REQUIRE_MODELS") == "1" {
			t.Fatalf("NWC_REQUIRE_MODELS=1: %v", err)
		}
		t.Skipf("reference model not installed: %v", err)
	}
	orttest.Require(t)
}

func topK(row []float32, k int) []int32 {
	idx := make([]int32, len(row))
	for i := range idx {
		idx[i] = int32(i)
	}
	sort.Slice(idx, func(a, b int) bool { return row[idx[a]] > row[idx[b]] })
	return idx[:k]
}

func TestSmolLM2(t *testing.T) {
	requireSmolLM2(t)
	t0 := time.Now()
	m, err := Open("smollm2-135m", Options{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	c := m.Config()
	t.Logf("built in %.1fs: %+v", time.Since(t0).Seconds(), c)
	if c.Layers != 30 || c.Hidden != 576 || c.Heads != 9 || c.KVHeads != 3 || c.HeadDim != 64 || c.FFN != 1536 || c.Vocab != 49152 || !c.Tied {
		t.Fatalf("unexpected config %+v", c)
	}
	ctx := context.Background()
	V := m.Vocab()

	logits, err := m.Logits(ctx, sentenceIDs)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range logits {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			t.Fatalf("non-finite logit %v at %d", v, i)
		}
	}
	// "... five, six" -> ","; "... five, six," -> " seven".
	n := len(sentenceIDs)
	if top := topK(logits[(n-3)*V:(n-2)*V], 3); top[0] != commaID {
		t.Errorf("after 'six' top tokens %v, want %d (',') first", top, commaID)
	}
	if top := topK(logits[(n-2)*V:(n-1)*V], 3); top[0] != sevenID {
		t.Errorf("after 'six,' top tokens %v, want %d (' seven') first", top, sevenID)
	}

	logits, err = m.Logits(ctx, franceIDs)
	if err != nil {
		t.Fatal(err)
	}
	top := topK(logits[(len(franceIDs)-1)*V:], 5)
	t.Logf("'The capital of France is' -> top-5 ids %v", top)
	if top[0] != parisID {
		t.Errorf("argmax %d, want %d (' Paris')", top[0], parisID)
	}

	if testing.Short() {
		return
	}
	toks := make([]int32, 512)
	for i := range toks {
		toks[i] = sentenceIDs[i%len(sentenceIDs)]
	}
	t1 := time.Now()
	if _, err := m.Logits(ctx, toks); err != nil {
		t.Fatal(err)
	}
	dt := time.Since(t1).Seconds()
	t.Logf("512-token window: %.2fs (%.0f tokens/s)", dt, 512/dt)
}

// TestSmolLM2AttentionAgree: the GroupQueryAttention graph and the
// standard-operator graph give the same logits on the real model.
func TestSmolLM2AttentionAgree(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the model twice")
	}
	requireSmolLM2(t)
	var out [2][]float32
	for i, attn := range []string{AttentionStandard, AttentionGQA} {
		m, err := Open("smollm2-135m", Options{Threads: 2, Build: BuildOptions{Attention: attn}})
		if err != nil {
			t.Fatal(err)
		}
		out[i], err = m.Logits(context.Background(), sentenceIDs)
		m.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	var d, a float64
	for i := range out[0] {
		d = math.Max(d, math.Abs(float64(out[0][i]-out[1][i])))
		a = math.Max(a, math.Abs(float64(out[0][i])))
	}
	t.Logf("standard vs gqa: max|diff| %.3g, max|logit| %.3g, ratio %.3g", d, a, d/a)
	if d > 1e-4*a {
		t.Fatalf("attention implementations disagree: %g > 1e-4 * %g", d, a)
	}
}
