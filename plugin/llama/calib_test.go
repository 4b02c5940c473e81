package llama

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/nwc-project/nwc/internal/ortenv/orttest"
	"github.com/nwc-project/nwc/plugin/onnx"
)

// refInputs is a direct float64 forward pass over GGUF-layout weights (as
// refForward, ggml rotary convention) that returns the four linear inputs
// of every layer: out[l][kind] is [len(tokens)][n].
func refInputs(c Config, w map[string][]float32, tokens []int32) []map[string][][]float64 {
	S, D, H, KV, hd, F := len(tokens), c.Hidden, c.Heads, c.KVHeads, c.HeadDim, c.FFN
	G := H / KV
	matvec := func(wt []float32, out, in int, x []float64) []float64 {
		y := make([]float64, out)
		for o := 0; o < out; o++ {
			s := 0.0
			for i := 0; i < in; i++ {
				s += float64(wt[o*in+i]) * x[i]
			}
			y[o] = s
		}
		return y
	}
	rms := func(x []float64, g []float32) []float64 {
		ms := 0.0
		for _, v := range x {
			ms += v * v
		}
		r := 1 / math.Sqrt(ms/float64(len(x))+c.RMSEps)
		y := make([]float64, len(x))
		for i := range x {
			y[i] = x[i] * r * float64(g[i])
		}
		return y
	}
	rope := func(v []float64, heads, pos int) {
		for h := 0; h < heads; h++ {
			for j := 0; j < hd/2; j++ {
				th := float64(pos) * math.Pow(c.RopeTheta, -float64(2*j)/float64(hd))
				a, b := v[h*hd+2*j], v[h*hd+2*j+1]
				v[h*hd+2*j] = a*math.Cos(th) - b*math.Sin(th)
				v[h*hd+2*j+1] = a*math.Sin(th) + b*math.Cos(th)
			}
		}
	}
	x := make([][]float64, S)
	emb := w["token_embd.weight"]
	for s, t := range tokens {
		x[s] = make([]float64, D)
		for i := 0; i < D; i++ {
			x[s][i] = float64(emb[int(t)*D+i])
		}
	}
	out := make([]map[string][][]float64, c.Layers)
	for l := 0; l < c.Layers; l++ {
		p := fmt.Sprintf("blk.%d.", l)
		rec := map[string][][]float64{}
		out[l] = rec
		qs, ks, vs := make([][]float64, S), make([][]float64, S), make([][]float64, S)
		for s := 0; s < S; s++ {
			n := rms(x[s], w[p+"attn_norm.weight"])
			rec[KindAttnIn] = append(rec[KindAttnIn], n)
			qs[s] = matvec(w[p+"attn_q.weight"], H*hd, D, n)
			ks[s] = matvec(w[p+"attn_k.weight"], KV*hd, D, n)
			vs[s] = matvec(w[p+"attn_v.weight"], KV*hd, D, n)
			rope(qs[s], H, s)
			rope(ks[s], KV, s)
		}
		for s := 0; s < S; s++ {
			ctx := make([]float64, H*hd)
			for h := 0; h < H; h++ {
				kv := h / G
				sc := make([]float64, s+1)
				mx := math.Inf(-1)
				for u := 0; u <= s; u++ {
					d := 0.0
					for i := 0; i < hd; i++ {
						d += qs[s][h*hd+i] * ks[u][kv*hd+i]
					}
					sc[u] = d / math.Sqrt(float64(hd))
					mx = math.Max(mx, sc[u])
				}
				sum := 0.0
				for u := range sc {
					sc[u] = math.Exp(sc[u] - mx)
					sum += sc[u]
				}
				for u := range sc {
					for i := 0; i < hd; i++ {
						ctx[h*hd+i] += sc[u] / sum * vs[u][kv*hd+i]
					}
				}
			}
			rec[KindAttnOut] = append(rec[KindAttnOut], ctx)
			o := matvec(w[p+"attn_output.weight"], D, H*hd, ctx)
			for i := range o {
				x[s][i] += o[i]
			}
		}
		for s := 0; s < S; s++ {
			m := rms(x[s], w[p+"ffn_norm.weight"])
			rec[KindFFNIn] = append(rec[KindFFNIn], m)
			g := matvec(w[p+"ffn_gate.weight"], F, D, m)
			u := matvec(w[p+"ffn_up.weight"], F, D, m)
			for i := range g {
				g[i] = g[i] / (1 + math.Exp(-g[i])) * u[i]
			}
			rec[KindFFNDown] = append(rec[KindFFNDown], g)
			d := matvec(w[p+"ffn_down.weight"], D, F, g)
			for i := range d {
				x[s][i] += d[i]
			}
		}
	}
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
	cfg, err := ConfigFromSource(src)
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
