//go:build cgo

package calib

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nwc-project/nwc/internal/ortenv/orttest"
	"github.com/nwc-project/nwc/plugin/llama"
)

// TestSinkWeight: H with sink weight w is the plain XᵀX plus (w-1) times
// Σ x_0 x_0ᵀ, x_0 the first-token activations of every window, checked
// against the activations the graph itself outputs; the weight is applied
// after the cache, and an entry without sink statistics is completed.
func TestSinkWeight(t *testing.T) {
	orttest.Require(t)
	ctx := context.Background()
	src := tinyModel(t, 3)
	cache := t.TempDir()
	opts := Options{Tokens: 96, SeqLen: 32, Threads: 1, Text: tinyText(), TextName: "tiny.txt", CacheDir: cache, SinkWeight: 1}
	plain, err := Collect(ctx, src, byteEncoder{}, opts)
	if err != nil {
		t.Fatal(err)
	}
	if plain.SinkWindows != 3 || plain.SinkWeight != 1 {
		t.Fatalf("sink windows %d weight %g", plain.SinkWindows, plain.SinkWeight)
	}
	opts.SinkWeight = 5
	weighted, err := Collect(ctx, src, byteEncoder{}, opts)
	if err != nil {
		t.Fatal(err)
	}
	if !weighted.Cached || weighted.SinkWeight != 5 {
		t.Fatalf("cached %v weight %g", weighted.Cached, weighted.SinkWeight)
	}

	// Σ x_0 x_0ᵀ from the graph's activations of the whole windows.
	wins, _, err := windowTokens(tinyText(), 3, 32, byteEncoder{})
	if err != nil {
		t.Fatal(err)
	}
	cal, err := llama.OpenCalibrator(src, llama.CalibrationOptions{Threads: 1, Activations: true})
	if err != nil {
		t.Fatal(err)
	}
	defer cal.Close()
	sink := make([][]float64, len(plain.Inputs))
	for i, in := range plain.Inputs {
		sink[i] = make([]float64, in.N*in.N)
	}
	for _, w := range wins {
		err := cal.Run(ctx, [][]int32{w}, func(int, []float32) {}, func(i int, x []float32) {
			n := plain.Inputs[i].N
			for a := 0; a < n; a++ {
				for b := 0; b < n; b++ {
					sink[i][a*n+b] += float64(x[a]) * float64(x[b])
				}
			}
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for i, in := range plain.Inputs {
		maxS, maxD := 0.0, 0.0
		for j := range in.H {
			d := (weighted.Inputs[i].H[j]-in.H[j])/4 - sink[i][j]
			maxS = math.Max(maxS, math.Abs(sink[i][j]))
			maxD = math.Max(maxD, math.Abs(d))
		}
		if !(maxS > 0) || maxD > 1e-4*maxS {
			t.Fatalf("%s: (H5 - H1)/4 differs from Σ x0 x0ᵀ by %g (max %g)", in.Name, maxD, maxS)
		}
	}
	if err := weighted.ApplySinkWeight(2); err == nil {
		t.Fatal("second ApplySinkWeight accepted")
	}
	if err := weighted.Save(t.TempDir()); err == nil {
		t.Fatal("Save of a weighted H accepted")
	}
	for _, w := range []float64{0.5, -1, math.NaN(), MaxSinkWeight * 2} {
		o := opts
		o.SinkWeight = w
		if _, err := Collect(ctx, src, byteEncoder{}, o); err == nil || !strings.Contains(err.Error(), "sink weight") {
			t.Fatalf("sink weight %g: err %v", w, err)
		}
	}

	// An entry from before the sink statistics is completed, not recollected.
	dir := weighted.Path
	mj, err := os.ReadFile(filepath.Join(dir, metaName))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	json.Unmarshal(mj, &m)
	m["sink_windows"] = 0
	mj, _ = json.Marshal(m)
	os.WriteFile(filepath.Join(dir, metaName), mj, 0o644)
	matches, _ := filepath.Glob(filepath.Join(dir, "*.sink.h"))
	if len(matches) != 4*tLayers {
		t.Fatalf("%d sink files", len(matches))
	}
	for _, f := range matches {
		os.Remove(f)
	}
	again, err := Collect(ctx, src, byteEncoder{}, opts)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Cached || again.SinkWindows != 3 {
		t.Fatalf("cached %v sink windows %d", again.Cached, again.SinkWindows)
	}
	for i, in := range again.Inputs {
		for j, v := range in.H {
			if math.Abs(v-weighted.Inputs[i].H[j]) > 1e-5*(1+math.Abs(v)) {
				t.Fatalf("%s: completed entry gives H %g, want %g", in.Name, v, weighted.Inputs[i].H[j])
			}
		}
	}
	if matches, _ := filepath.Glob(filepath.Join(dir, "*.sink.h")); len(matches) != 4*tLayers {
		t.Fatalf("completed entry has %d sink files", len(matches))
	}
	// A damaged sink file is detected and named.
	f := filepath.Join(dir, "blk.0.attn_qkv.sink.h")
	b, _ := os.ReadFile(f)
	b[40] ^= 1
	os.WriteFile(f, b, 0o644)
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "blk.0.attn_qkv.sink.h") {
		t.Fatalf("damaged sink file: %v", err)
	}
}
