//go:build cgo

package llama

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nwc-project/nwc/internal/ortenv/orttest"
	"github.com/nwc-project/nwc/loader"
	"github.com/nwc-project/nwc/loader/arch"
	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/refmodel"
	"github.com/nwc-project/nwc/plugin/onnx"
)

// TestGemma3KVCacheMatchesScoring: the tiny gemma3 (window 6, 24 tokens)
// through the KV-cache graph, prefilled before, across and past the
// window, then in single steps or chunks, gives the scoring graph's logits
// with both attention implementations.
func TestGemma3KVCacheMatchesScoring(t *testing.T) {
	orttest.Require(t)
	ctx := context.Background()
	dir := filepath.Join(familiesDir, "gemma3")
	toks, _ := familyRef(t, dir)
	src := openFamily(t, dir)
	for _, attn := range []string{AttentionStandard, AttentionGQA} {
		t.Run(attn, func(t *testing.T) {
			opts := Options{Threads: 1, Build: BuildOptions{Attention: attn}}
			m, err := OpenSource(src, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			d, err := OpenDecoderSource(src, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			for _, prefill := range []int{1, 6, 7, 24} {
				checkKVAgainstScoring(t, ctx, m, d, toks, prefill, 1, 1e-5)
			}
			checkKVAgainstScoring(t, ctx, m, d, toks, 4, 5, 1e-5)
		})
	}
}

// TestGemma3WindowMatters: with the sliding window widened past the
// sequence the logits leave transformers' (so the parity test exercises
// the mask), and every sequence length runs (no ErrSlidingWindow).
func TestGemma3WindowMatters(t *testing.T) {
	orttest.Require(t)
	ctx := context.Background()
	toks, ref := familyRef(t, filepath.Join(familiesDir, "gemma3"))
	dir := copyFamily(t, "gemma3", func(m map[string]any) { m["sliding_window"] = 64 })
	for _, attn := range []string{AttentionStandard, AttentionGQA} {
		m, err := OpenSource(openFamily(t, dir), Options{Threads: 1, Build: BuildOptions{Attention: attn}})
		if err != nil {
			t.Fatal(err)
		}
		d, a := closeLogitsDiff(t, ctx, m, toks, ref)
		t.Logf("%s, window 64: max|diff| %.3g, max|logit| %.3g", attn, d, a)
		if d < 1e-2*a {
			t.Fatalf("%s: a window of 64 instead of 6 changes the logits by only %g (max|logit| %g)", attn, d, a)
		}
	}
}

// TestGemma3GGUFNaming: the tiny gemma3 renamed to llama.cpp's names with
// its norms stored as llama.cpp's converter stores them (w+1, NormShift 0)
// and q/k rows as trained gives transformers' logits.
func TestGemma3GGUFNaming(t *testing.T) {
	orttest.Require(t)
	ctx := context.Background()
	dir := filepath.Join(familiesDir, "gemma3")
	toks, ref := familyRef(t, dir)
	hf := openFamily(t, dir)
	hcfg, err := arch.ConfigFromSource(hf)
	if err != nil {
		t.Fatal(err)
	}
	gcfg := hcfg
	gcfg.Naming, gcfg.NormShift = arch.NamingGGUF, 0
	// GGUF name of every HF name.
	rename := map[string]string{}
	for _, f := range []func(arch.Naming) string{arch.Naming.EmbedTensor, arch.Naming.NormTensor, arch.Naming.HeadTensor} {
		rename[f(arch.NamingHF)] = f(arch.NamingGGUF)
	}
	for l := 0; l < hcfg.Layers; l++ {
		for _, p := range []string{partAttnNorm, partQ, partK, partV, partO, partQNorm, partKNorm, partPostAttnNorm, partFFNNorm, partGate, partUp, partDown, partPostFFNNorm} {
			rename[hcfg.LayerTensor(l, p)] = gcfg.LayerTensor(l, p)
		}
	}
	src := &memSource{}
	for _, ti := range hf.Tensors() {
		name, ok := rename[ti.Name]
		if !ok {
			t.Fatalf("no GGUF name for %s", ti.Name)
		}
		v, err := hf.ReadFloat32(ti.Name, nil)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(name, "norm.weight") {
			for i := range v {
				v[i]++
			}
		}
		src.Add(name, v, ti.Shape...)
	}
	for _, attn := range []string{AttentionStandard, AttentionGQA} {
		opts := Options{Threads: 1, Build: BuildOptions{Attention: attn}}
		m, err := newModel(gcfg, opts, weightBytes(src), func(provider string, sink onnx.ExternalSink) ([]byte, error) {
			return Build(gcfg, src, buildOptions(gcfg, opts, provider, sink))
		})
		if err != nil {
			t.Fatal(err)
		}
		d, a := closeLogitsDiff(t, ctx, m, toks, ref)
		t.Logf("%s, GGUF names: max|diff| %.3g, max|logit| %.3g", attn, d, a)
		if d > 1e-3*a {
			t.Fatalf("%s: max|diff| %g > 1e-3 * %g", attn, d, a)
		}
	}
}

// closeLogitsDiff runs m on toks, closes it and returns maxRelDiff
// against ref.
func closeLogitsDiff(t *testing.T, ctx context.Context, m *Model, toks []int32, ref []float64) (maxDiff, maxAbs float64) {
	t.Helper()
	defer m.Close()
	got, err := m.Logits(ctx, toks)
	if err != nil {
		t.Fatal(err)
	}
	return maxRelDiff(got, ref)
}

// TestGemma3RealConfig: gemma-3-270m's GGUF (when installed) reads as
// llama.cpp reads it.
func TestGemma3RealConfig(t *testing.T) {
	path, err := refmodel.Resolve("gemma3-270m")
	if err != nil {
		if os.Getenv("NWC_REQUIRE_MODELS") == "1" {
			t.Fatalf("NWC_REQUIRE_MODELS=1: %v", err)
		}
		t.Skipf("gemma3-270m not installed: %v", err)
	}
	src, _, err := loader.Open(path, codec.Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	c, err := arch.ConfigFromSource(src)
	if err != nil {
		t.Fatal(err)
	}
	if c.Arch != arch.ArchGemma3 || c.Layers != 18 || c.Hidden != 640 || c.Heads != 4 || c.KVHeads != 1 || c.HeadDim != 256 ||
		c.FFN != 2048 || c.Vocab != 262144 || !c.Tied || c.SlidingWindow != 512 || c.SlidingPattern != 6 || c.AttnScale != 1.0/16 ||
		c.PermutedQK() || c.NormShift != 0 || !c.PostNorms || !c.QKNorm || c.RopeTheta != 1e6 || c.RopeLocalTheta != 10000 {
		t.Fatalf("config %+v", c)
	}
	// The block linears the compressor codes lossy: 7 per layer.
	n := 0
	for _, ti := range src.Tensors() {
		if loader.IsBlockLinear(ti) {
			n++
		}
	}
	if n != 7*c.Layers {
		t.Fatalf("%d block linears, want %d", n, 7*c.Layers)
	}
}
