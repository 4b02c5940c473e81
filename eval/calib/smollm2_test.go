//go:build cgo

package calib

import (
	"context"
	"os"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/nwc-project/nwc/internal/ortenv/orttest"
	"github.com/nwc-project/nwc/loader"
	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/refmodel"
	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/plugin/tokenizer"
)

func openSmolLM2(t *testing.T) (tensor.Source, *tokenizer.Tokenizer) {
	t.Helper()
	if _, err := refmodel.Lookup("smollm2-135m"); err != nil {
		if os.Getenv("NWC_REQUIRE_MODELS") == "1" {
			t.Fatalf("NWC_REQUIRE_MODELS=1: %v", err)
		}
		t.Skipf("reference model not installed: %v", err)
	}
	orttest.Require(t)
	src, _, err := loader.Open("smollm2-135m", codec.Env{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	tok, err := tokenizer.ForSource(src)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tok.Close() })
	return src, tok
}

// TestSmolLM2Hessians: a few hundred tokens of the default text give the
// 120 H matrices of smollm2-135m (30 layers x 4 inputs) with the right
// sizes, covering all 210 block linears.
func TestSmolLM2Hessians(t *testing.T) {
	src, tok := openSmolLM2(t)
	t0 := time.Now()
	h, err := Collect(context.Background(), src, tok, Options{Tokens: 256, SeqLen: 128, Threads: 1, NoCache: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("256 tokens in %.1fs, windows at bytes %v of %d", time.Since(t0).Seconds(), h.WindowStarts, h.TextBytes)
	if len(h.Inputs) != 120 || h.Tokens != 256 || h.Windows != 2 {
		t.Fatalf("%d inputs, %d tokens, %d windows", len(h.Inputs), h.Tokens, h.Windows)
	}
	want := []int{576, 576, 576, 1536}
	for i, in := range h.Inputs {
		if in.N != want[i%4] || in.Layer != i/4 {
			t.Fatalf("input %d %s: n %d", i, in.Name, in.N)
		}
		for j, d := range in.Diag() {
			if !(d > 0) {
				t.Fatalf("%s: diag[%d] = %g", in.Name, j, d)
			}
		}
	}
	linears := 0
	for _, ti := range src.Tensors() {
		if !loader.IsBlockLinear(ti) {
			continue
		}
		linears++
		H, ok, err := h.HOrIdentity(ti.Name, int(ti.Shape[1]))
		if err != nil || !ok || len(H) != int(ti.Shape[1]*ti.Shape[1]) {
			t.Fatalf("%s: ok %v err %v", ti.Name, ok, err)
		}
	}
	if linears != 210 {
		t.Fatalf("%d block linears", linears)
	}
}

// TestSmolLM2RankingStability (NWC_CALIB_MEASURE=1, minutes): how much the
// diag(H) column ranking used for the importance levels (top 11.1%) changes
// between NWC_CALIB_SMALL (default 16384) and NWC_CALIB_LARGE (default
// 65536) tokens. Uses and fills the cache.
func TestSmolLM2RankingStability(t *testing.T) {
	if os.Getenv("NWC_CALIB_MEASURE") != "1" {
		t.Skip("set NWC_CALIB_MEASURE=1 (takes minutes)")
	}
	src, tok := openSmolLM2(t)
	env := func(k string, def int) int {
		if v, err := strconv.Atoi(os.Getenv(k)); err == nil {
			return v
		}
		return def
	}
	threads := env("NWC_CALIB_THREADS", 1)
	small, large := env("NWC_CALIB_SMALL", 16384), env("NWC_CALIB_LARGE", 65536)
	var hs [2]*Hessians
	for i, n := range []int{small, large} {
		t0 := time.Now()
		h, err := Collect(context.Background(), src, tok, Options{Tokens: n, Threads: threads,
			Progress: func(d, tot int) { t.Logf("%d/%d tokens, %.0fs", d, tot, time.Since(t0).Seconds()) }})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%d tokens: %.1fs (cached %v, collection took %.1fs with %d threads, %s) at %s", n, time.Since(t0).Seconds(), h.Cached, h.Seconds, h.Threads, h.Attention, h.Path)
		hs[i] = h
	}
	top := func(d []float64, k int) map[int]bool {
		idx := make([]int, len(d))
		for i := range idx {
			idx[i] = i
		}
		sort.SliceStable(idx, func(a, b int) bool { return d[idx[a]] > d[idx[b]] })
		m := map[int]bool{}
		for _, i := range idx[:k] {
			m[i] = true
		}
		return m
	}
	kinds := map[string][]float64{}
	var all []float64
	for i, a := range hs[0].Inputs {
		b := hs[1].Inputs[i]
		da, db := a.Diag(), b.Diag()
		// top 11.1% (levels 1..3); and top 1.1% (levels 2..3).
		for _, frac := range []float64{0.111, 0.011} {
			k := max(1, int(frac*float64(a.N)+0.5))
			ta, tb := top(da, k), top(db, k)
			common := 0
			for c := range ta {
				if tb[c] {
					common++
				}
			}
			ov := float64(common) / float64(k)
			key := a.Kind + "@" + strconv.FormatFloat(frac*100, 'f', 1, 64) + "%"
			kinds[key] = append(kinds[key], ov)
			if frac == 0.111 {
				all = append(all, ov)
			}
		}
	}
	mean := func(v []float64) (m, lo float64) {
		lo = 1
		for _, x := range v {
			m += x
			lo = min(lo, x)
		}
		return m / float64(len(v)), lo
	}
	keys := make([]string, 0, len(kinds))
	for k := range kinds {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		m, lo := mean(kinds[k])
		t.Logf("overlap %s: mean %.3f, min %.3f over %d layers", k, m, lo, len(kinds[k]))
	}
	m, lo := mean(all)
	t.Logf("overlap top 11.1%%, all 120 inputs: mean %.3f, min %.3f", m, lo)
}
