//go:build cgo

package calib

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nwc-project/nwc/internal/ortenv/orttest"
	"github.com/nwc-project/nwc/internal/tensortest"
	"github.com/nwc-project/nwc/loader/gguf"
	"github.com/nwc-project/nwc/loader/tensor"
)

// memSource is an in-memory float32 tensor.Source.
type memSource = tensortest.MemSource

// tinyModel: a random 2-layer Llama in GGUF naming (d 16, 4 heads / 2 kv
// heads of 4, ffn 24, vocab 50).
const (
	tLayers, tD, tHeads, tKV, tHD, tFFN, tVocab = 2, 16, 4, 2, 4, 24, 50
)

func tinyModel(t *testing.T, seed uint64) *memSource {
	r := rand.New(rand.NewPCG(seed, 1))
	rnd := func(n int, scale, mean float64) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(mean + r.NormFloat64()*scale)
		}
		return v
	}
	u32 := func(v int) gguf.Value { return gguf.Value{Type: gguf.ValueUint32, V: uint32(v)} }
	meta, err := gguf.MarshalMetadataJSON([]gguf.KV{
		{Key: "general.architecture", Value: gguf.Value{Type: gguf.ValueString, V: "llama"}},
		{Key: "llama.block_count", Value: u32(tLayers)},
		{Key: "llama.embedding_length", Value: u32(tD)},
		{Key: "llama.feed_forward_length", Value: u32(tFFN)},
		{Key: "llama.attention.head_count", Value: u32(tHeads)},
		{Key: "llama.attention.head_count_kv", Value: u32(tKV)},
	})
	if err != nil {
		t.Fatal(err)
	}
	s := &memSource{Data: map[string][]float32{}, AssetList: []tensor.Asset{{Name: gguf.MetadataAsset, Data: meta}}}
	s.Add("token_embd.weight", rnd(tVocab*tD, 1, 0), tVocab, tD)
	s.Add("output_norm.weight", rnd(tD, 0.2, 1), tD)
	q, kv := tHeads*tHD, tKV*tHD
	for l := 0; l < tLayers; l++ {
		p := fmt.Sprintf("blk.%d.", l)
		s.Add(p+"attn_norm.weight", rnd(tD, 0.2, 1), tD)
		s.Add(p+"attn_q.weight", rnd(q*tD, 0.5, 0), int64(q), tD)
		s.Add(p+"attn_k.weight", rnd(kv*tD, 0.5, 0), int64(kv), tD)
		s.Add(p+"attn_v.weight", rnd(kv*tD, 0.3, 0), int64(kv), tD)
		s.Add(p+"attn_output.weight", rnd(tD*q, 0.3, 0), tD, int64(q))
		s.Add(p+"ffn_norm.weight", rnd(tD, 0.2, 1), tD)
		s.Add(p+"ffn_gate.weight", rnd(tFFN*tD, 0.3, 0), tFFN, tD)
		s.Add(p+"ffn_up.weight", rnd(tFFN*tD, 0.3, 0), tFFN, tD)
		s.Add(p+"ffn_down.weight", rnd(tD*tFFN, 0.3, 0), tD, tFFN)
	}
	return s
}

// byteEncoder maps every byte to a token id below tVocab.
type byteEncoder struct{}

func (byteEncoder) Encode(s string) ([]int32, error) {
	ids := make([]int32, len(s))
	for i := 0; i < len(s); i++ {
		ids[i] = int32(s[i]) % tVocab
	}
	return ids, nil
}

func tinyText() string {
	return strings.Repeat("It was the best of times,\nit was the worst of times.\n", 20)
}

func checkHessians(t *testing.T, h *Hessians, tokens int64) {
	t.Helper()
	if len(h.Inputs) != 4*tLayers {
		t.Fatalf("%d inputs", len(h.Inputs))
	}
	wantN := []int{tD, tHeads * tHD, tD, tFFN}
	for i, in := range h.Inputs {
		if in.N != wantN[i%4] || in.Tokens != tokens || len(in.H) != in.N*in.N {
			t.Fatalf("input %s: n %d tokens %d len %d", in.Name, in.N, in.Tokens, len(in.H))
		}
		n := in.N
		d := in.Diag()
		for a := 0; a < n; a++ {
			if d[a] <= 0 {
				t.Fatalf("%s: diag[%d] = %g", in.Name, a, d[a])
			}
			for b := 0; b < n; b++ {
				v := in.H[a*n+b]
				if v != in.H[b*n+a] {
					t.Fatalf("%s: not symmetric at %d,%d", in.Name, a, b)
				}
				if v*v > d[a]*d[b]*(1+1e-5) {
					t.Fatalf("%s: |H[%d][%d]|² > H[a][a] H[b][b]: not PSD", in.Name, a, b)
				}
			}
		}
	}
	for l := 0; l < tLayers; l++ {
		for _, g := range [][]string{{"attn_q", "attn_k", "attn_v"}, {"attn_output"}, {"ffn_gate", "ffn_up"}, {"ffn_down"}} {
			first, ok := h.For(fmt.Sprintf("blk.%d.%s.weight", l, g[0]))
			if !ok {
				t.Fatalf("no H for blk.%d.%s", l, g[0])
			}
			for _, p := range g[1:] {
				if in, _ := h.For(fmt.Sprintf("blk.%d.%s.weight", l, p)); in != first {
					t.Fatalf("blk.%d.%s does not share %s's H", l, p, g[0])
				}
			}
		}
	}
}

func TestCollectCacheRoundTrip(t *testing.T) {
	orttest.Require(t)
	src := tinyModel(t, 1)
	cache := t.TempDir()
	var notes []string
	var progress []int
	opts := Options{Tokens: 100, SeqLen: 32, Batch: 2, Threads: 1, Text: tinyText(), TextName: "tiny.txt", CacheDir: cache,
		Logf:     func(f string, a ...any) { notes = append(notes, fmt.Sprintf(f, a...)) },
		Progress: func(done, total int) { progress = append(progress, done, total) }}
	h, err := Collect(context.Background(), src, byteEncoder{}, opts)
	if err != nil {
		t.Fatal(err)
	}
	// 100 tokens round up to 4 windows of 32; batches of 2.
	if h.Cached || h.Tokens != 128 || h.Windows != 4 || h.SeqLen != 32 || h.Path == "" || !slices.Equal(progress, []int{64, 128, 128, 128}) {
		t.Fatalf("cached %v tokens %d windows %d seq %d path %q progress %v", h.Cached, h.Tokens, h.Windows, h.SeqLen, h.Path, progress)
	}
	checkHessians(t, h, 128)
	key, _ := ModelKey(src)
	if want := CachePath(cache, key, h.TextSHA256, 128, 32); h.Path != want {
		t.Fatalf("path %s, want %s", h.Path, want)
	}

	// From the cache: the same numbers.
	h2, err := Collect(context.Background(), src, byteEncoder{}, opts)
	if err != nil {
		t.Fatal(err)
	}
	if !h2.Cached {
		t.Fatal("second Collect did not use the cache")
	}
	same := func(a, b *Hessians) bool {
		for i := range a.Inputs {
			if !slices.Equal(a.Inputs[i].H, b.Inputs[i].H) || !slices.Equal(a.Inputs[i].Weights, b.Inputs[i].Weights) {
				return false
			}
		}
		return len(a.Inputs) == len(b.Inputs)
	}
	if !same(h, h2) {
		t.Fatal("cached H differs from the collected one")
	}

	// Every kind of damage is detected and names the file.
	f := filepath.Join(h.Path, "blk.1.ffn_down.h")
	orig, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int{0, 5, 9, 17, 25, 40, len(orig) - 1} {
		b := slices.Clone(orig)
		b[off] ^= 0x10
		os.WriteFile(f, b, 0o644)
		if _, err := Load(h.Path); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "blk.1.ffn_down.h") {
			t.Fatalf("byte %d flipped: err %v", off, err)
		}
	}
	os.WriteFile(f, orig[:len(orig)-4], 0o644)
	if _, err := Load(h.Path); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("truncated: %v", err)
	}
	os.Remove(f)
	if _, err := Load(h.Path); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("missing file: %v", err)
	}
	// Collect replaces the damaged entry.
	notes = nil
	h3, err := Collect(context.Background(), src, byteEncoder{}, opts)
	if err != nil {
		t.Fatal(err)
	}
	if h3.Cached || !same(h, h3) || len(notes) != 1 || !strings.Contains(notes[0], "collecting again") {
		t.Fatalf("cached %v same %v notes %q", h3.Cached, same(h, h3), notes)
	}
	if _, err := Load(h.Path); err != nil {
		t.Fatalf("entry not repaired: %v", err)
	}
	if _, err := Load(filepath.Join(cache, "nothing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing entry: %v", err)
	}

	// Another model (one weight changed) has another key.
	src.Data["blk.0.ffn_up.weight"][3] += 1
	key2, _ := ModelKey(src)
	if key2 == key {
		t.Fatal("model key ignores the weights")
	}
}

func TestCollectErrors(t *testing.T) {
	src := tinyModel(t, 2)
	ctx := context.Background()
	if _, err := Collect(ctx, src, byteEncoder{}, Options{Tokens: 10000, SeqLen: 100, Text: "short", NoCache: true}); !errors.Is(err, ErrText) {
		orttest.Require(t)
		t.Fatalf("short text: %v", err)
	}
	if _, err := Collect(ctx, src, byteEncoder{}, Options{Tokens: 10, SeqLen: 100, Text: "x", NoCache: true}); err == nil {
		t.Fatal("seq len > tokens accepted")
	}
}

func TestWindowTokens(t *testing.T) {
	text := "aaaa\nbbbb\ncccc\ndddd\neeee\nffff\n"
	wins, starts, err := windowTokens(text, 3, 4, byteEncoder{})
	if err != nil {
		t.Fatal(err)
	}
	// Byte offsets 0, 10, 20 are line starts already.
	if !slices.Equal(starts, []int{0, 10, 20}) {
		t.Fatalf("starts %v", starts)
	}
	for i, w := range wins {
		want, _ := byteEncoder{}.Encode(text[starts[i] : starts[i]+4])
		if !slices.Equal(w, want) {
			t.Fatalf("window %d: %v, want %v", i, w, want)
		}
	}
	// Offsets in mid-line move to the next line start.
	if _, starts, err = windowTokens(text, 4, 3, byteEncoder{}); err != nil || !slices.Equal(starts, []int{0, 10, 15, 25}) {
		t.Fatalf("starts %v, %v", starts, err)
	}
	// Windows never overlap: 4 windows of 6 tokens do not fit in 3 lines each.
	if _, _, err := windowTokens(text, 4, 6, byteEncoder{}); !errors.Is(err, ErrText) {
		t.Fatal(err)
	}
	if _, _, err := windowTokens("no newline at all", 2, 3, byteEncoder{}); !errors.Is(err, ErrText) {
		t.Fatal(err)
	}
}

func TestIdentityFallback(t *testing.T) {
	var h *Hessians
	H, ok, err := h.HOrIdentity("blk.0.attn_q.weight", 3)
	if err != nil || ok || !slices.Equal(H, []float64{1, 0, 0, 0, 1, 0, 0, 0, 1}) {
		t.Fatalf("%v %v %v", H, ok, err)
	}
	h = &Hessians{Inputs: []*Input{{Name: "blk.0.attn_qkv", N: 2, Weights: []string{"blk.0.attn_q.weight"}, H: []float64{4, 1, 1, 9}}}}
	H, ok, err = h.HOrIdentity("blk.0.attn_q.weight", 2)
	if err != nil || !ok || !slices.Equal(H, []float64{4, 1, 1, 9}) {
		t.Fatalf("%v %v %v", H, ok, err)
	}
	if _, _, err := h.HOrIdentity("blk.0.attn_q.weight", 3); err == nil {
		t.Fatal("size mismatch accepted")
	}
	if in, _ := h.For("blk.0.attn_q.weight"); !slices.Equal(in.Diag(), []float64{4, 9}) {
		t.Fatal(in.Diag())
	}
}
