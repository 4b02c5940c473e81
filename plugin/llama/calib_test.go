//go:build cgo

package llama

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/nwc-project/nwc/internal/ortenv/orttest"
	"github.com/nwc-project/nwc/loader/arch"
	"github.com/nwc-project/nwc/plugin/onnx"
)

// refInputs runs refForwardRec and returns the four linear inputs of every
// layer: out[l][kind] is [len(tokens)][n].
func refInputs(c arch.Config, w map[string][]float32, tokens []int32) []map[string][][]float64 {
	out := make([]map[string][][]float64, c.Layers)
	for l := range out {
		out[l] = map[string][][]float64{}
	}
	refForwardRec(c, w, tokens, func(l int, kind string, _ int, x []float64) {
		out[l][kind] = append(out[l][kind], x)
	})
	return out
}

// TestCalibrationGraph: on a tiny random model, for every linear input, the
// graph's H equals XᵀX of the activations of a plain-Go float64 forward pass
// (summed over a batch of two sequences), and the graph's X output matches
// those activations.
func TestCalibrationGraph(t *testing.T) {
	orttest.Require(t)
	gqaCfg := tinyCfg
	gqaCfg.Hidden, gqaCfg.HeadDim = 64, 16
	for _, tc := range []struct {
		tied bool
		attn string
	}{{true, AttentionStandard}, {false, AttentionStandard}, {false, AttentionGQA}} {
		c := tinyCfg
		if tc.attn == AttentionGQA {
			c = gqaCfg
		}
		t.Run(fmt.Sprintf("tied=%v/%s", tc.tied, tc.attn), func(t *testing.T) {
			w := tinyWeights(c, tc.tied, 5)
			src := ggufSource(t, c, w)
			cal, err := OpenCalibrator(src, CalibrationOptions{Threads: 1, Activations: true, Build: BuildOptions{Attention: tc.attn}})
			if err != nil {
				t.Fatal(err)
			}
			defer cal.Close()
			ins := cal.Inputs()
			if len(ins) != 4*c.Layers {
				t.Fatalf("%d inputs, want %d", len(ins), 4*c.Layers)
			}
			wantN := map[string]int{KindAttnIn: c.Hidden, KindAttnOut: c.Heads * c.HeadDim, KindFFNIn: c.Hidden, KindFFNDown: c.FFN}
			wantW := map[string]string{KindAttnIn: "attn_q attn_k attn_v", KindAttnOut: "attn_output", KindFFNIn: "ffn_gate ffn_up", KindFFNDown: "ffn_down"}
			for i, in := range ins {
				var parts []string
				for _, wn := range in.Weights {
					parts = append(parts, strings.TrimSuffix(strings.TrimPrefix(wn, fmt.Sprintf("blk.%d.", in.Layer)), ".weight"))
				}
				if in.Layer != i/4 || in.N != wantN[in.Kind] || strings.Join(parts, " ") != wantW[in.Kind] || in.Name != fmt.Sprintf("blk.%d.%s", in.Layer, in.Kind) {
					t.Fatalf("input %d: %+v", i, in)
				}
			}
			seqs := [][]int32{tinyTokens(13, c.Vocab, 1), tinyTokens(13, c.Vocab, 2)}
			var refs [][]map[string][][]float64
			for _, s := range seqs {
				refs = append(refs, refInputs(c, w, s))
			}
			hs := make([][]float32, len(ins))
			xs := make([][]float32, len(ins))
			err = cal.Run(context.Background(), seqs,
				func(i int, h []float32) { hs[i] = append([]float32(nil), h...) },
				func(i int, x []float32) { xs[i] = append([]float32(nil), x...) })
			if err != nil {
				t.Fatal(err)
			}
			for i, in := range ins {
				n := in.N
				var X [][]float64 // [tokens][n]
				for _, r := range refs {
					X = append(X, r[in.Layer][in.Kind]...)
				}
				// X from the graph matches the reference.
				var dx, ax float64
				for tok := range X {
					for j := 0; j < n; j++ {
						dx = math.Max(dx, math.Abs(float64(xs[i][tok*n+j])-X[tok][j]))
						ax = math.Max(ax, math.Abs(X[tok][j]))
					}
				}
				// H = XᵀX from the reference activations.
				var dh, ah float64
				for a := 0; a < n; a++ {
					for b := 0; b < n; b++ {
						s := 0.0
						for tok := range X {
							s += X[tok][a] * X[tok][b]
						}
						dh = math.Max(dh, math.Abs(float64(hs[i][a*n+b])-s))
						ah = math.Max(ah, math.Abs(s))
					}
				}
				if i < 4 || i >= len(ins)-4 {
					t.Logf("%s: n %d, X max|diff| %.3g / %.3g, H max|diff| %.3g / %.3g (rel %.2g)", in.Name, n, dx, ax, dh, ah, dh/ah)
				}
				if dx > 1e-4*ax || dh > 1e-4*ah || ah == 0 {
					t.Fatalf("%s: X max|diff| %g (max %g), H max|diff| %g (max %g)", in.Name, dx, ax, dh, ah)
				}
			}
		})
	}
}

// TestCalibrationGraphPruned: the calibration graph has no logits output,
// no output head and no final norm; HF naming works too.
func TestCalibrationGraphPruned(t *testing.T) {
	w := tinyWeights(tinyCfg, false, 3)
	src := ggufSource(t, tinyCfg, w)
	cfg, err := arch.ConfigFromSource(src)
	if err != nil {
		t.Fatal(err)
	}
	data, ins, err := BuildCalibration(cfg, src, CalibrationOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := onnx.UnmarshalModel(data)
	if err != nil {
		t.Fatal(err)
	}
	gp := m.GetGraph()
	if len(gp.Output) != len(ins) || len(ins) != 8 {
		t.Fatalf("%d outputs, %d inputs", len(gp.Output), len(ins))
	}
	for i, o := range gp.Output {
		if o.GetName() != ins[i].Output || o.GetName() == OutputName {
			t.Fatalf("output %d: %s", i, o.GetName())
		}
	}
	for _, in := range gp.Initializer {
		if in.GetName() == "output.weight" || in.GetName() == "output_norm.weight" {
			t.Fatalf("initializer %s kept", in.GetName())
		}
	}
	for _, nd := range gp.Node {
		if nd.GetOpType() == "Gemm" && nd.Input[0] != nd.Input[1] {
			t.Fatalf("logits Gemm kept: %v", nd.Input)
		}
	}
	if _, _, err := BuildCalibration(cfg, src, CalibrationOptions{Build: BuildOptions{Attention: "bogus"}}); err == nil {
		t.Fatal("bad attention accepted")
	}
}
