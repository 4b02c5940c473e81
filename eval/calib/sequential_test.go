//go:build cgo

package calib

import (
	"bytes"
	"context"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/nwc-project/nwc/internal/ortenv/orttest"
	"github.com/nwc-project/nwc/loader"
	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/plugin/llama"
)

// familyLlama is plugin/llama's tiny random Llama (Hugging Face naming,
// head_dim 16: GroupQueryAttention on the CPU; tinyModel has head_dim 4:
// standard attention, GGUF naming).
const familyLlama = "../../plugin/llama/testdata/families/llama"

// modEncoder maps every byte to a token id below vocab.
type modEncoder int

func (m modEncoder) Encode(s string) ([]int32, error) {
	ids := make([]int32, len(s))
	for i := 0; i < len(s); i++ {
		ids[i] = int32(s[i]) % int32(m)
	}
	return ids, nil
}

// relDiff is max |a-b| / max |b|.
func relDiff(a, b []float64) float64 {
	var d, m float64
	for i := range a {
		d = max(d, math.Abs(a[i]-b[i]))
		m = max(m, math.Abs(b[i]))
	}
	return d / m
}

// coarse rounds every weight to sign(w)·mean|w| per row (1 bit).
func coarse(w []float32, cols int) []float32 {
	out := make([]float32, len(w))
	for r := 0; r < len(w)/cols; r++ {
		row := w[r*cols : (r+1)*cols]
		var s float64
		for _, v := range row {
			s += math.Abs(float64(v))
		}
		m := float32(s / float64(cols))
		for j, v := range row {
			out[r*cols+j] = float32(math.Copysign(float64(m), float64(v)))
		}
	}
	return out
}

// sequentialDiffs runs the sequential protocol on src, coding every weight
// with code, and returns the relative difference of each input's H from
// the one-pass H, by input name.
func sequentialDiffs(t *testing.T, src tensor.Source, enc Encoder, code func(w []float32, cols int) []float32) map[string]float64 {
	t.Helper()
	ctx := context.Background()
	opts := Options{Tokens: 96, SeqLen: 32, Batch: 2, Threads: 1, Text: tinyText(), TextName: "tiny.txt", NoCache: true}
	one, err := Collect(ctx, src, enc, opts)
	if err != nil {
		t.Fatal(err)
	}
	seq, err := NewSequential(ctx, src, enc, opts)
	if err != nil {
		t.Fatal(err)
	}
	if cached, err := seq.Start(ctx, "test"); err != nil || cached {
		t.Fatalf("start: cached %v, %v", cached, err)
	}
	diffs := map[string]float64{}
	for _, step := range seq.Steps() {
		for _, name := range step {
			in, ok := one.For(name)
			if !ok {
				t.Fatalf("one-pass has no H for %s", name)
			}
			H, err := seq.Hessian(ctx, name, in.N)
			if err != nil {
				t.Fatal(err)
			}
			diffs[in.Name] = relDiff(H, in.H)
		}
		for _, name := range step {
			w, err := src.ReadFloat32(name, nil)
			if err != nil {
				t.Fatal(err)
			}
			ti, _ := tensor.Find(src.Tensors(), name)
			if err := seq.Coded(ctx, name, code(w, int(ti.Shape[1]))); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := seq.Finish(); err != nil {
		t.Fatal(err)
	}
	return diffs
}

// TestSequentialVsOnePass: with the weights kept exactly, the sequential
// protocol gives the one-pass H of every input; with coarsely coded
// weights, block 0's q/k/v input is still the same (it reads no coded
// weight) and every later input differs.
func TestSequentialVsOnePass(t *testing.T) {
	orttest.Require(t)
	family, _, err := loader.Open(familyLlama, codec.Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer family.Close()
	for _, m := range []struct {
		name string
		src  tensor.Source
		enc  Encoder
	}{{"tiny-gguf-standard-attention", tinyModel(t, 7), byteEncoder{}}, {"family-llama-gqa", family, modEncoder(256)}} {
		t.Run(m.name, func(t *testing.T) {
			exact := sequentialDiffs(t, m.src, m.enc, func(w []float32, _ int) []float32 { return w })
			for name, d := range exact {
				if d > 1e-5 {
					t.Errorf("exact weights: %s: H differs from one-pass by %.3g (relative)", name, d)
				}
			}
			rough := sequentialDiffs(t, m.src, m.enc, coarse)
			for name, d := range rough {
				if name == "blk.0."+llama.KindAttnIn {
					if d > 1e-5 {
						t.Errorf("coarse weights: %s reads no coded weight, but its H differs by %.3g", name, d)
					}
				} else if d < 1e-3 {
					t.Errorf("coarse weights: %s: H differs from one-pass by only %.3g", name, d)
				}
			}
			t.Logf("exact %v\ncoarse %v", exact, rough)
		})
	}
}

// TestSequentialCompress: nwc compress --calib sequential on the tiny
// family Llama with a calibrated codec writes a file that decodes and
// runs; a second run takes every H from the cache and writes the same
// file.
func TestSequentialCompress(t *testing.T) {
	orttest.Require(t)
	ctx := context.Background()
	src, _, err := loader.Open(familyLlama, codec.Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dir := t.TempDir()
	opts := Options{Tokens: 96, SeqLen: 32, Threads: 1, Text: tinyText(), TextName: "tiny.txt", CacheDir: filepath.Join(dir, "cache")}
	var files [][]byte
	for run := 0; run < 2; run++ {
		seq, err := NewSequential(ctx, src, modEncoder(256), opts)
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(dir, "m.nwc")
		sum, err := loader.Compress(ctx, src, out, loader.CompressOptions{Codec: "gptq-g32", Bits: 3, Sequential: seq, Concurrency: 2})
		if err != nil {
			t.Fatal(err)
		}
		info := seq.Info()
		if info.Cached != (run == 1) || info.Tokens != 96 || info.Windows != 3 {
			t.Fatalf("run %d: cached %v tokens %d windows %d", run, info.Cached, info.Tokens, info.Windows)
		}
		if sum.LinearBitsPerWeight <= 3 || sum.LinearBitsPerWeight > 5 {
			t.Fatalf("run %d: %.3f bits/weight", run, sum.LinearBitsPerWeight)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, b)
		f, err := loader.OpenNWC(out, codec.Env{})
		if err != nil {
			t.Fatal(err)
		}
		m, err := llama.OpenSource(f, llama.Options{Threads: 1})
		if err != nil {
			f.Close()
			t.Fatal(err)
		}
		logits, err := m.Logits(ctx, []int32{1, 2, 3, 4})
		m.Close()
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range logits {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				t.Fatalf("run %d: logit %v", run, v)
			}
		}
	}
	if !bytes.Equal(files[0], files[1]) {
		t.Fatal("the cached run wrote another file")
	}
}
