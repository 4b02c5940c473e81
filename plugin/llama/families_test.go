//go:build cgo

package llama

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nwc-project/nwc/internal/ortenv/orttest"
	"github.com/nwc-project/nwc/loader"
	"github.com/nwc-project/nwc/loader/arch"
	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/tensor"
)

// familiesDir holds the tiny random models of scripts/make_tiny_families.py:
// one Hugging Face folder per family, with the ids it was run on
// (tokens.json) and transformers' float32 logits (logits.f32).
const familiesDir = "testdata/families"

// family is a folder of familiesDir and the flags its config must give.
type family struct {
	name string
	want arch.Config
}

var families = []family{
	{"llama", arch.Config{Arch: arch.ArchLlama, HeadDim: 16}},
	{"mistral", arch.Config{Arch: arch.ArchMistral, HeadDim: 16}},
	{"qwen2", arch.Config{Arch: arch.ArchQwen2, HeadDim: 16, QKVBias: true, Tied: true}},
	{"qwen3", arch.Config{Arch: arch.ArchQwen3, HeadDim: 32, QKNorm: true, Tied: true}},
	// Layers sliding, global, sliding; window 6 < 24 tokens.
	{"gemma3", arch.Config{Arch: arch.ArchGemma3, HeadDim: 32, QKNorm: true, Tied: true, SlidingWindow: 6, SlidingPattern: 2,
		PostNorms: true, Act: arch.ActGELUTanh, NormShift: 1, RopeLocalTheta: 10000, RopeScale: 4,
		AttnScale: float64(float32(1 / math.Sqrt(24))), EmbedScale: 8}},
}

// familyRef reads a family's token ids and reference logits.
func familyRef(t *testing.T, dir string) ([]int32, []float64) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "tokens.json"))
	if err != nil {
		t.Fatal(err)
	}
	var toks []int32
	if err := json.Unmarshal(data, &toks); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "logits.f32"))
	if err != nil {
		t.Fatal(err)
	}
	ref := make([]float64, len(raw)/4)
	for i := range ref {
		ref[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:])))
	}
	return toks, ref
}

// eachFamily runs run as a subtest per family with its folder, token ids
// and reference logits.
func eachFamily(t *testing.T, run func(t *testing.T, f family, dir string, toks []int32, ref []float64)) {
	orttest.Require(t)
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			dir := filepath.Join(familiesDir, f.name)
			toks, ref := familyRef(t, dir)
			run(t, f, dir, toks, ref)
		})
	}
}

func openFamily(t *testing.T, path string) tensor.Source {
	t.Helper()
	src, _, err := loader.Open(path, codec.Env{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

// TestFamiliesMatchTransformers: each family's logits, through the scoring
// graph (both attention implementations) and the KV-cache graph, match
// transformers' to 1e-3 of the largest logit.
func TestFamiliesMatchTransformers(t *testing.T) {
	ctx := context.Background()
	eachFamily(t, func(t *testing.T, f family, dir string, toks []int32, ref []float64) {
		src := openFamily(t, dir)
		cfg, err := arch.ConfigFromSource(src)
		if err != nil {
			t.Fatal(err)
		}
		w := f.want
		if cfg.Arch != w.Arch || cfg.HeadDim != w.HeadDim || cfg.QKVBias != w.QKVBias || cfg.QKNorm != w.QKNorm ||
			cfg.Tied != w.Tied || cfg.SlidingWindow != w.SlidingWindow || cfg.SlidingPattern != w.SlidingPattern ||
			cfg.PostNorms != w.PostNorms || cfg.Act != w.Act || cfg.NormShift != w.NormShift || cfg.RopeLocalTheta != w.RopeLocalTheta ||
			cfg.RopeScale != w.RopeScale || cfg.AttnScale != w.AttnScale || cfg.EmbedScale != w.EmbedScale || cfg.Naming != arch.NamingHF {
			t.Fatalf("config %+v", cfg)
		}
		if len(ref) != len(toks)*cfg.Vocab {
			t.Fatalf("%d reference logits for %d tokens x %d", len(ref), len(toks), cfg.Vocab)
		}
		for _, attn := range []string{AttentionStandard, AttentionGQA} {
			opts := Options{Threads: 1, Build: BuildOptions{Attention: attn}}
			m, err := OpenSource(src, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			got, err := m.Logits(ctx, toks)
			if err != nil {
				t.Fatal(err)
			}
			d, a := maxRelDiff(got, ref)
			t.Logf("%s %s: max|diff| %.3g, max|logit| %.3g, relative %.3g", f.name, attn, d, a, d/a)
			if d > 1e-3*a {
				t.Fatalf("%s: max|diff| %g > 1e-3 * %g", attn, d, a)
			}
			dec, err := OpenDecoderSource(src, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer dec.Close()
			checkKVAgainstScoring(t, ctx, m, dec, toks, 5, 1, 1e-5)
		}
	})
}

// TestFamiliesCompress: each family compresses (rtn-g128, 4 bits, no
// calibration) and the compressed file runs, close to the original.
func TestFamiliesCompress(t *testing.T) {
	ctx := context.Background()
	eachFamily(t, func(t *testing.T, f family, dir string, toks []int32, ref []float64) {
		out := filepath.Join(t.TempDir(), f.name+".nwc")
		if _, err := loader.Compress(ctx, openFamily(t, dir), out, loader.CompressOptions{Codec: "rtn-g128", Bits: 4}); err != nil {
			t.Fatal(err)
		}
		src := openFamily(t, out)
		m, err := OpenSource(src, Options{Threads: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		if cfg := m.Config(); cfg.Arch != f.want.Arch || cfg.QKVBias != f.want.QKVBias || cfg.QKNorm != f.want.QKNorm {
			t.Fatalf("config from the .nwc %+v", cfg)
		}
		got, err := m.Logits(ctx, toks)
		if err != nil {
			t.Fatal(err)
		}
		d, a := maxRelDiff(got, ref)
		t.Logf("%s rtn-g128 4 bits: max|diff| %.3g, max|logit| %.3g", f.name, d, a)
		if math.IsNaN(d) || d > 0.5*a {
			t.Fatalf("compressed logits off by %g (max|logit| %g)", d, a)
		}
	})
}

// copyFamily copies a family folder to a temporary one with its
// config.json edited by edit.
func copyFamily(t *testing.T, name string, edit func(map[string]any)) string {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{"model.safetensors", "config.json"} {
		data, err := os.ReadFile(filepath.Join(familiesDir, name, f))
		if err != nil {
			t.Fatal(err)
		}
		if f == "config.json" {
			var m map[string]any
			if err := json.Unmarshal(data, &m); err != nil {
				t.Fatal(err)
			}
			edit(m)
			if data, err = json.Marshal(m); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, f), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestFamiliesRefused: a model type outside the Llama-like families is
// refused by name; a Mistral sliding window shorter than the sequence is
// refused, one at least as long is not.
func TestFamiliesRefused(t *testing.T) {
	orttest.Require(t)
	for _, mt := range []string{"gemma2", "phi3"} {
		dir := copyFamily(t, "llama", func(m map[string]any) { m["model_type"] = mt })
		_, err := OpenSource(openFamily(t, dir), Options{Threads: 1})
		if !errors.Is(err, arch.ErrConfig) || !strings.Contains(err.Error(), mt) {
			t.Errorf("%s: want arch.ErrConfig naming it, got %v", mt, err)
		}
	}
	dir := copyFamily(t, "mistral", func(m map[string]any) { m["sliding_window"] = 8 })
	src := openFamily(t, dir)
	ctx := context.Background()
	toks, _ := familyRef(t, filepath.Join(familiesDir, "mistral"))
	m, err := OpenSource(src, Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := m.Logits(ctx, toks[:8]); err != nil {
		t.Fatalf("8 tokens in a window of 8: %v", err)
	}
	if _, err := m.Logits(ctx, toks); !errors.Is(err, ErrSlidingWindow) || !strings.Contains(err.Error(), "mistral") {
		t.Fatalf("16 tokens in a window of 8: want ErrSlidingWindow, got %v", err)
	}
	d, err := OpenDecoderSource(src, Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	c := d.NewCache()
	defer c.Close()
	if _, err := c.Forward(ctx, toks[:8]); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Forward(ctx, toks[8:9]); !errors.Is(err, ErrSlidingWindow) {
		t.Fatalf("9th token in a window of 8: want ErrSlidingWindow, got %v", err)
	}
}

// TestFamiliesCalibration: the calibration graph (what gptq/ecsq/nwc
// calibrate with) opens and runs on every family, with q/k/v biases and
// q/k norms in the graph, and its inputs have the family's widths.
func TestFamiliesCalibration(t *testing.T) {
	ctx := context.Background()
	eachFamily(t, func(t *testing.T, f family, dir string, toks []int32, _ []float64) {
		cal, err := OpenCalibrator(openFamily(t, dir), CalibrationOptions{Threads: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer cal.Close()
		c := cal.Config()
		ins := cal.Inputs()
		if len(ins) != 4*c.Layers {
			t.Fatalf("%d inputs, want %d", len(ins), 4*c.Layers)
		}
		err = cal.Run(ctx, [][]int32{toks}, func(i int, h []float32) {
			in := ins[i]
			want := map[string]int{KindAttnIn: c.Hidden, KindAttnOut: c.Heads * c.HeadDim, KindFFNIn: c.Hidden, KindFFNDown: c.FFN}[in.Kind]
			if in.N != want || len(h) != want*want {
				t.Errorf("%s: N %d, %d values, want %d", in.Name, in.N, len(h), want)
				return
			}
			for j := 0; j < in.N; j++ { // diagonal: sums of squares
				if d := h[j*in.N+j]; !(d > 0) || math.IsInf(float64(d), 0) {
					t.Errorf("%s: H[%d,%d] = %g", in.Name, j, j, d)
					return
				}
			}
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
	})
}
