//go:build cgo

package llama

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nwc-project/nwc/internal/ortenv/orttest"
	"github.com/nwc-project/nwc/internal/tensortest"
	"github.com/nwc-project/nwc/loader/arch"
	"github.com/nwc-project/nwc/loader/gguf"
	"github.com/nwc-project/nwc/loader/tensor"
)

// memSource is an in-memory float32 tensor.Source.
type memSource = tensortest.MemSource

// tinyCfg: 2 layers, d=16, 4 heads / 2 kv heads (head_dim 4), ffn 24, vocab 50.
var tinyCfg = arch.Config{Arch: "llama", Layers: 2, Hidden: 16, Heads: 4, KVHeads: 2, HeadDim: 4, FFN: 24,
	Vocab: 50, RopeTheta: 10000, RMSEps: 1e-5, Naming: arch.NamingGGUF}

// tinyWeights returns random weights in GGUF naming and layout (attn_q and
// attn_k rows as llama.cpp stores them).
func tinyWeights(c arch.Config, tied bool, seed uint64) map[string][]float32 {
	r := rand.New(rand.NewPCG(seed, 1))
	rnd := func(n int, scale float64) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(r.NormFloat64() * scale)
		}
		return v
	}
	norm := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(1 + 0.2*r.NormFloat64())
		}
		return v
	}
	D, F := c.Hidden, c.FFN
	qd, kd := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	w := map[string][]float32{
		"token_embd.weight":  rnd(c.Vocab*D, 1),
		"output_norm.weight": norm(D),
	}
	if !tied {
		w["output.weight"] = rnd(c.Vocab*D, 0.3)
	}
	for l := 0; l < c.Layers; l++ {
		p := fmt.Sprintf("blk.%d.", l)
		w[p+"attn_norm.weight"] = norm(D)
		w[p+"attn_q.weight"] = rnd(qd*D, 0.5)
		w[p+"attn_k.weight"] = rnd(kd*D, 0.5)
		w[p+"attn_v.weight"] = rnd(kd*D, 0.3)
		w[p+"attn_output.weight"] = rnd(D*qd, 0.3)
		w[p+"ffn_norm.weight"] = norm(D)
		w[p+"ffn_gate.weight"] = rnd(F*D, 0.3)
		w[p+"ffn_up.weight"] = rnd(F*D, 0.3)
		w[p+"ffn_down.weight"] = rnd(D*F, 0.3)
	}
	return w
}

func shapeOf(c arch.Config, name string) []int64 {
	D, F, V := int64(c.Hidden), int64(c.FFN), int64(c.Vocab)
	qd, kd := int64(c.Heads*c.HeadDim), int64(c.KVHeads*c.HeadDim)
	switch {
	case name == "token_embd.weight" || name == "output.weight":
		return []int64{V, D}
	case strings.HasSuffix(name, "norm.weight"):
		return []int64{D}
	case strings.HasSuffix(name, "attn_q.weight"):
		return []int64{qd, D}
	case strings.HasSuffix(name, "attn_k.weight"), strings.HasSuffix(name, "attn_v.weight"):
		return []int64{kd, D}
	case strings.HasSuffix(name, "attn_output.weight"):
		return []int64{D, qd}
	case strings.HasSuffix(name, "ffn_down.weight"):
		return []int64{D, F}
	default: // gate, up
		return []int64{F, D}
	}
}

func ggufSource(t *testing.T, c arch.Config, w map[string][]float32) *memSource {
	u32 := func(v int) gguf.Value { return gguf.Value{Type: gguf.ValueUint32, V: uint32(v)} }
	f32 := func(v float64) gguf.Value { return gguf.Value{Type: gguf.ValueFloat32, V: float32(v)} }
	meta, err := gguf.MarshalMetadataJSON([]gguf.KV{
		{Key: "general.architecture", Value: gguf.Value{Type: gguf.ValueString, V: "llama"}},
		{Key: "llama.block_count", Value: u32(c.Layers)},
		{Key: "llama.context_length", Value: u32(128)},
		{Key: "llama.embedding_length", Value: u32(c.Hidden)},
		{Key: "llama.feed_forward_length", Value: u32(c.FFN)},
		{Key: "llama.attention.head_count", Value: u32(c.Heads)},
		{Key: "llama.attention.head_count_kv", Value: u32(c.KVHeads)},
		{Key: "llama.rope.freq_base", Value: f32(c.RopeTheta)},
		{Key: "llama.attention.layer_norm_rms_epsilon", Value: f32(c.RMSEps)},
		{Key: "llama.rope.dimension_count", Value: u32(c.HeadDim)},
	})
	if err != nil {
		t.Fatal(err)
	}
	s := &memSource{AssetList: []tensor.Asset{{Name: gguf.MetadataAsset, Data: meta}}}
	for _, name := range sortedKeys(w) {
		s.Add(name, w[name], shapeOf(c, name)...)
	}
	return s
}

func sortedKeys(m map[string][]float32) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	for i := range ks {
		for j := i + 1; j < len(ks); j++ {
			if ks[j] < ks[i] {
				ks[i], ks[j] = ks[j], ks[i]
			}
		}
	}
	return ks
}

// refForward is a direct float64 forward pass over the GGUF-layout weights,
// using ggml's rotary convention (adjacent pairs (2j, 2j+1) of each head
// rotated by pos*theta^(-2j/hd)) on the rows as stored: an independent check
// of Build's un-permutation + rotate-half.
func refForward(c arch.Config, w map[string][]float32, tokens []int32) []float64 {
	return refForwardRec(c, w, tokens, nil)
}

// refForwardRec is refForward that also hands every linear input to rec (if
// not nil): rec(layer, kind, s, x) with kind one of KindAttnIn, KindAttnOut,
// KindFFNIn, KindFFNDown, s the token position and x (not reused) the input.
func refForwardRec(c arch.Config, w map[string][]float32, tokens []int32, rec func(layer int, kind string, s int, x []float64)) []float64 {
	if rec == nil {
		rec = func(int, string, int, []float64) {}
	}
	S, D, H, KV, hd, F, V := len(tokens), c.Hidden, c.Heads, c.KVHeads, c.HeadDim, c.FFN, c.Vocab
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
		ms /= float64(len(x))
		r := 1 / math.Sqrt(ms+c.RMSEps)
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
	for l := 0; l < c.Layers; l++ {
		p := fmt.Sprintf("blk.%d.", l)
		qs, ks, vs := make([][]float64, S), make([][]float64, S), make([][]float64, S)
		for s := 0; s < S; s++ {
			n := rms(x[s], w[p+"attn_norm.weight"])
			rec(l, KindAttnIn, s, n)
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
			rec(l, KindAttnOut, s, ctx)
			o := matvec(w[p+"attn_output.weight"], D, H*hd, ctx)
			for i := range o {
				x[s][i] += o[i]
			}
		}
		for s := 0; s < S; s++ {
			m := rms(x[s], w[p+"ffn_norm.weight"])
			rec(l, KindFFNIn, s, m)
			g := matvec(w[p+"ffn_gate.weight"], F, D, m)
			u := matvec(w[p+"ffn_up.weight"], F, D, m)
			for i := range g {
				g[i] = g[i] / (1 + math.Exp(-g[i])) * u[i]
			}
			rec(l, KindFFNDown, s, g)
			d := matvec(w[p+"ffn_down.weight"], D, F, g)
			for i := range d {
				x[s][i] += d[i]
			}
		}
	}
	head, ok := w["output.weight"]
	if !ok {
		head = emb
	}
	out := make([]float64, 0, S*V)
	for s := 0; s < S; s++ {
		out = append(out, matvec(head, V, D, rms(x[s], w["output_norm.weight"]))...)
	}
	return out
}

func maxRelDiff(got []float32, want []float64) (maxDiff, maxAbs float64) {
	for i := range want {
		maxDiff = math.Max(maxDiff, math.Abs(float64(got[i])-want[i]))
		maxAbs = math.Max(maxAbs, math.Abs(want[i]))
	}
	return maxDiff, maxAbs
}

func tinyTokens(n int, vocab int, seed uint64) []int32 {
	r := rand.New(rand.NewPCG(seed, 2))
	t := make([]int32, n)
	for i := range t {
		t[i] = int32(r.IntN(vocab))
	}
	return t
}

func TestTinyModelMatchesReference(t *testing.T) {
	orttest.Require(t)
	// GroupQueryAttention (with rotary) needs head_dim % 16 == 0: d=64, head_dim 16.
	gqaCfg := tinyCfg
	gqaCfg.Hidden, gqaCfg.HeadDim = 64, 16
	for _, tc := range []struct {
		tied bool
		attn string
	}{{true, AttentionStandard}, {false, AttentionStandard}, {true, AttentionGQA}, {false, AttentionGQA}} {
		tied := tc.tied
		tinyCfg := tinyCfg
		if tc.attn == AttentionGQA {
			tinyCfg = gqaCfg
		}
		t.Run(fmt.Sprintf("tied=%v/%s", tied, tc.attn), func(t *testing.T) {
			w := tinyWeights(tinyCfg, tied, 7)
			src := ggufSource(t, tinyCfg, w)
			cfg, err := arch.ConfigFromSource(src)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Tied != tied || cfg.Vocab != 50 || cfg.HeadDim != tinyCfg.HeadDim {
				t.Fatalf("config %+v", cfg)
			}
			m, err := OpenSource(src, Options{Threads: 1, Build: BuildOptions{Attention: tc.attn}})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			// The same session scores windows of several lengths.
			for _, n := range []int{1, 5, 23} {
				toks := tinyTokens(n, tinyCfg.Vocab, uint64(n))
				got, err := m.Logits(context.Background(), toks)
				if err != nil {
					t.Fatal(err)
				}
				if len(got) != n*m.Vocab() {
					t.Fatalf("len %d", len(got))
				}
				want := refForward(tinyCfg, w, toks)
				d, a := maxRelDiff(got, want)
				t.Logf("seq %d: max|diff| %.3g, max|logit| %.3g, ratio %.3g", n, d, a, d/a)
				if d > 1e-4*a {
					t.Fatalf("seq %d: max|diff| %g > 1e-4 * %g", n, d, a)
				}
			}
		})
	}
}

// TestTinyHFNaming: the same weights under Hugging Face names and layout
// (q/k rows un-permuted, config.json) give the same logits.
func TestTinyHFNaming(t *testing.T) {
	orttest.Require(t)
	c := tinyCfg
	w := tinyWeights(c, false, 11)
	hf := map[string]string{"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight", "output.weight": "lm_head.weight"}
	src := &memSource{}
	for _, name := range sortedKeys(w) {
		v, shape := w[name], shapeOf(c, name)
		hn, ok := hf[name]
		if !ok {
			var l int
			var part string
			fmt.Sscanf(strings.Replace(strings.TrimSuffix(name, ".weight"), ".", " ", 2), "blk %d %s", &l, &part)
			hn = arch.NamingHF.LayerTensor(l, part)
			switch part {
			case partQ:
				v = arch.PermuteQK(v, int(shape[0]), int(shape[1]), c.Heads, true)
			case partK:
				v = arch.PermuteQK(v, int(shape[0]), int(shape[1]), c.KVHeads, true)
			}
		}
		src.Add(hn, v, shape...)
	}
	cj, _ := json.Marshal(map[string]any{"model_type": "llama", "hidden_size": c.Hidden, "intermediate_size": c.FFN,
		"num_hidden_layers": c.Layers, "num_attention_heads": c.Heads, "num_key_value_heads": c.KVHeads,
		"vocab_size": c.Vocab, "rms_norm_eps": c.RMSEps, "rope_theta": c.RopeTheta, "tie_word_embeddings": false, "hidden_act": "silu"})
	src.AssetList = []tensor.Asset{{Name: arch.HFConfigAsset, Data: cj}}
	m, err := OpenSource(src, Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Config().Naming != arch.NamingHF || m.Config().Tied {
		t.Fatalf("config %+v", m.Config())
	}
	toks := tinyTokens(17, c.Vocab, 3)
	got, err := m.Logits(context.Background(), toks)
	if err != nil {
		t.Fatal(err)
	}
	d, a := maxRelDiff(got, refForward(c, w, toks))
	t.Logf("max|diff| %.3g, max|logit| %.3g", d, a)
	if d > 1e-4*a {
		t.Fatalf("max|diff| %g > 1e-4 * %g", d, a)
	}
}

func TestCUDAFallback(t *testing.T) {
	orttest.Require(t)
	w := tinyWeights(tinyCfg, true, 1)
	var notes []string
	m, err := OpenSource(ggufSource(t, tinyCfg, w), Options{Provider: "cuda", Threads: 1,
		Logf: func(f string, a ...any) { notes = append(notes, fmt.Sprintf(f, a...)) }})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Provider() == "cuda" {
		t.Log("CUDA provider in use")
	} else {
		if os.Getenv("NWC_EXPECT_CUDA") == "1" {
			t.Fatalf("NWC_EXPECT_CUDA=1 but fell back: %v", notes)
		}
		if len(notes) == 0 || m.FallbackNote() == "" {
			t.Fatal("fallback without a message")
		}
		t.Log(notes[0])
	}
	toks := tinyTokens(6, tinyCfg.Vocab, 9)
	got, err := m.Logits(context.Background(), toks)
	if err != nil {
		t.Fatal(err)
	}
	if d, a := maxRelDiff(got, refForward(tinyCfg, w, toks)); d > 1e-4*a {
		t.Fatalf("fallback logits off: %g vs %g", d, a)
	}
}

func TestErrors(t *testing.T) {
	orttest.Require(t)
	w := tinyWeights(tinyCfg, true, 1)
	m, err := OpenSource(ggufSource(t, tinyCfg, w), Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Logits(context.Background(), []int32{1, 50}); err == nil {
		t.Fatal("out-of-vocabulary token accepted")
	}
	if _, err := m.Logits(context.Background(), nil); err == nil {
		t.Fatal("empty input accepted")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := m.Logits(ctx, []int32{1}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled context: %v", err)
	}
	// Cancel during a long run: either it completes first or it reports
	// the cancellation.
	ctx, cancel = context.WithTimeout(context.Background(), 2*time.Millisecond)
	defer cancel()
	if _, err := m.Logits(ctx, tinyTokens(3000, tinyCfg.Vocab, 1)); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("cancelled run: %v", err)
	} else {
		t.Logf("cancel during run: %v", err)
	}
	m.Close()
	if _, err := m.Logits(context.Background(), []int32{1}); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
	// Missing weight.
	src := ggufSource(t, tinyCfg, w)
	delete(src.Data, "blk.1.ffn_up.weight")
	var infos []tensor.Info
	for _, i := range src.Infos {
		if i.Name != "blk.1.ffn_up.weight" {
			infos = append(infos, i)
		}
	}
	src.Infos = infos
	if _, err := OpenSource(src, Options{}); !errors.Is(err, tensor.ErrNotFound) {
		t.Fatalf("missing weight: %v", err)
	}
	// No metadata.
	if _, err := OpenSource(&memSource{}, Options{}); !errors.Is(err, arch.ErrConfig) {
		t.Fatalf("no metadata: %v", err)
	}
}

func TestTranspose(t *testing.T) {
	for _, d := range [][2]int{{1, 1}, {3, 70}, {65, 33}, {100, 64}} {
		r, c := d[0], d[1]
		w := make([]float32, r*c)
		for i := range w {
			w[i] = float32(i)
		}
		tr := tensor.Transpose(w, r, c, nil)
		for i := 0; i < r; i++ {
			for j := 0; j < c; j++ {
				if tr[j*r+i] != w[i*c+j] {
					t.Fatalf("%dx%d: mismatch at %d,%d", r, c, i, j)
				}
			}
		}
	}
}

// TestTinyBatch: a batch of sequences gives each sequence's own logits
// (both attention implementations).
func TestTinyBatch(t *testing.T) {
	orttest.Require(t)
	c := tinyCfg
	c.Hidden, c.HeadDim = 64, 16
	w := tinyWeights(c, true, 5)
	for _, attn := range []string{AttentionStandard, AttentionGQA} {
		m, err := OpenSource(ggufSource(t, c, w), Options{Threads: 1, Build: BuildOptions{Attention: attn}})
		if err != nil {
			t.Fatal(err)
		}
		seqs := [][]int32{tinyTokens(9, c.Vocab, 1), tinyTokens(9, c.Vocab, 2), tinyTokens(9, c.Vocab, 3)}
		got, err := m.LogitsBatch(context.Background(), seqs)
		if err != nil {
			t.Fatal(err)
		}
		n := 9 * c.Vocab
		for i, s := range seqs {
			d, a := maxRelDiff(got[i*n:(i+1)*n], refForward(c, w, s))
			if d > 1e-4*a {
				t.Fatalf("%s: sequence %d: max|diff| %g > 1e-4 * %g", attn, i, d, a)
			}
		}
		if _, err := m.LogitsBatch(context.Background(), [][]int32{{1, 2}, {3}}); err == nil {
			t.Fatal("ragged batch accepted")
		}
		m.Close()
	}
}

// TestTinyOpsets: graphs for newer opsets (ReduceMean axes as an input,
// Split num_outputs) give the same logits.
func TestTinyOpsets(t *testing.T) {
	orttest.Require(t)
	w := tinyWeights(tinyCfg, true, 4)
	toks := tinyTokens(7, tinyCfg.Vocab, 4)
	want := refForward(tinyCfg, w, toks)
	for _, opset := range []int64{17, 18, 21, 23} {
		m, err := OpenSource(ggufSource(t, tinyCfg, w), Options{Threads: 1, Build: BuildOptions{Opset: opset}})
		if err != nil {
			t.Fatalf("opset %d: %v", opset, err)
		}
		got, err := m.Logits(context.Background(), toks)
		m.Close()
		if err != nil {
			t.Fatalf("opset %d: %v", opset, err)
		}
		if d, a := maxRelDiff(got, want); d > 1e-4*a {
			t.Fatalf("opset %d: max|diff| %g > 1e-4 * %g", opset, d, a)
		}
	}
	if _, err := Build(tinyCfg, ggufSource(t, tinyCfg, w), BuildOptions{Opset: 12}); err == nil {
		t.Fatal("opset 12 accepted")
	}
}
