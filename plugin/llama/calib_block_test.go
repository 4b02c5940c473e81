//go:build cgo

package llama

import (
	"context"
	"math"
	"strings"
	"testing"

	"github.com/nwc-project/nwc/loader/arch"

	"github.com/nwc-project/nwc/internal/ortenv/orttest"
)

// TestBlockStages: running the block stages in order over every layer
// (standard and GroupQueryAttention) gives, for every linear input, the H
// = XᵀX of a plain-Go float64 forward pass; bad layers and stages are
// refused.
func TestBlockStages(t *testing.T) {
	orttest.Require(t)
	gqaCfg := tinyCfg
	gqaCfg.Hidden, gqaCfg.HeadDim = 64, 16
	for _, tc := range []struct{ attn string }{{AttentionStandard}, {AttentionGQA}} {
		c := tinyCfg
		if tc.attn == AttentionGQA {
			c = gqaCfg
		}
		t.Run(tc.attn, func(t *testing.T) {
			ctx := context.Background()
			w := tinyWeights(c, false, 5)
			src := ggufSource(t, c, w)
			seqs := [][]int32{tinyTokens(13, c.Vocab, 1), tinyTokens(13, c.Vocab, 2)}
			var refs [][]map[string][][]float64
			for _, s := range seqs {
				refs = append(refs, refInputs(c, w, s))
			}
			opts := CalibrationOptions{Threads: 1, Build: BuildOptions{Attention: tc.attn}}
			st := &BlockState{Batch: 2, Seq: 13}
			run := func(l int, stage BlockStage, h func([]float32)) {
				t.Helper()
				r, err := OpenBlockStage(src, l, stage, opts)
				if err != nil {
					t.Fatal(err)
				}
				defer r.Close()
				if err := r.Run(ctx, st, seqs, h); err != nil {
					t.Fatal(err)
				}
			}
			run(0, StageEmbed, nil)
			for l := 0; l < c.Layers; l++ {
				for _, stage := range []BlockStage{StageAttnIn, StageAttnOut, StageFFNIn, StageFFNDown} {
					var got []float32
					run(l, stage, func(h []float32) { got = append([]float32(nil), h...) })
					kind := stage.Kind()
					var X [][]float64
					for _, r := range refs {
						X = append(X, r[l][kind]...)
					}
					n := len(X[0])
					if len(got) != n*n {
						t.Fatalf("layer %d %s: H has %d values, want %d", l, kind, len(got), n*n)
					}
					var dh, ah float64
					for a := 0; a < n; a++ {
						for b := 0; b < n; b++ {
							s := 0.0
							for tok := range X {
								s += X[tok][a] * X[tok][b]
							}
							dh = math.Max(dh, math.Abs(float64(got[a*n+b])-s))
							ah = math.Max(ah, math.Abs(s))
						}
					}
					if dh/ah > 1e-4 {
						t.Errorf("layer %d %s: H differs from the reference by %.3g (relative)", l, kind, dh/ah)
					}
				}
				run(l, StageOutput, nil)
			}
			if _, err := OpenBlockStage(src, c.Layers, StageAttnIn, opts); err == nil {
				t.Error("layer past the last accepted")
			}
			if _, err := OpenBlockStage(src, 0, StageOutput+1, opts); err == nil {
				t.Error("unknown stage accepted")
			}
			r, err := OpenBlockStage(src, 0, StageAttnIn, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			bad := &BlockState{Batch: 2, Seq: 13, X: make([]float32, 5)}
			if err := r.Run(ctx, bad, seqs, nil); err == nil {
				t.Error("hidden states of the wrong size accepted")
			}
		})
	}
}

// TestCheckBlockStagesRefusesGemma3: a Gemma-3 config (per-layer pattern,
// post-norms) is refused by name; the Llama test config passes.
func TestCheckBlockStagesRefusesGemma3(t *testing.T) {
	if err := CheckBlockStages(tinyCfg); err != nil {
		t.Fatalf("llama config refused: %v", err)
	}
	g := tinyCfg
	g.Arch, g.SlidingPattern, g.SlidingWindow, g.PostNorms = arch.ArchGemma3, 6, 4, true
	err := CheckBlockStages(g)
	if err == nil || !strings.Contains(err.Error(), "gemma3") {
		t.Fatalf("gemma3 config: err = %v, want a refusal naming gemma3", err)
	}
	if _, _, err := newBlockSource(g, nil, 0, false); err == nil {
		t.Fatal("newBlockSource accepted a gemma3 config")
	}
}
