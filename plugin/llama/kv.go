//go:build cgo

package llama

import (
	"context"
	"fmt"
	"runtime/debug"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/nwc-project/nwc/loader"
	"github.com/nwc-project/nwc/loader/arch"
	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/plugin/onnx"
)

// Decoder is a Llama decoder with a key-value cache, for generation: one
// ONNX Runtime session of the graph Build makes with KVCache set. The same
// graph runs a prompt (prefill, many tokens) and the one-token decode steps
// after it; a Cache holds one sequence's keys and values between calls.
// A Decoder may be shared by goroutines, each with its own Cache.
type Decoder struct {
	session
}

// OpenDecoder opens the model nameOrPath (see loader.Open) for generation.
func OpenDecoder(nameOrPath string, opts Options) (*Decoder, error) {
	src, _, err := loader.Open(nameOrPath, codec.Env{})
	if err != nil {
		return nil, err
	}
	defer src.Close()
	return OpenDecoderSource(src, opts)
}

// OpenDecoderSource builds a Decoder from the weights of src (which the
// caller still owns and may close once it returns). opts.Build.KVCache is
// set whatever its value.
func OpenDecoderSource(src tensor.Source, opts Options) (*Decoder, error) {
	cfg, err := arch.ConfigFromSource(src)
	if err != nil {
		return nil, err
	}
	pf := prefetch(src, cfg)
	defer pf.Close()
	ins := []string{InputIDs}
	outs := []string{OutputName}
	for l := 0; l < cfg.Layers; l++ {
		ins = append(ins, PastKey(l), PastValue(l))
		outs = append(outs, PresentKey(l), PresentValue(l))
	}
	d := &Decoder{session{cfg: cfg}}
	err = d.open(opts, weightBytes(src), ins, outs, func(provider string, sink onnx.ExternalSink) ([]byte, error) {
		bo := buildOptions(cfg, opts, provider, sink)
		bo.KVCache = true
		data, err := Build(cfg, pf, bo)
		debug.FreeOSMemory()
		return data, err
	})
	if err != nil {
		return nil, err
	}
	return d, nil
}

// Cache is one sequence's key-value cache: the tokens fed so far through
// Forward. It is not safe for concurrent use; Close frees it.
type Cache struct {
	d  *Decoder
	n  int                    // tokens cached
	kv []*ort.Tensor[float32] // past key, past value per layer (Go-owned storage)
}

// NewCache returns an empty cache for one sequence.
func (d *Decoder) NewCache() *Cache { return &Cache{d: d} }

// Len returns the number of tokens in the cache.
func (c *Cache) Len() int { return c.n }

// Close frees the cache's tensors; the cache is empty afterwards.
func (c *Cache) Close() {
	for _, t := range c.kv {
		t.Destroy()
	}
	c.kv, c.n = nil, 0
}

// Forward feeds tokens at positions Len()..Len()+len(tokens)-1 and returns
// their logits, len(tokens) x Vocab() float32 in row-major order; the
// tokens join the cache. On error (a cancelled ctx, say) the cache is left
// as it was.
func (c *Cache) Forward(ctx context.Context, tokens []int32) ([]float32, error) {
	d := c.d
	if len(tokens) == 0 {
		return nil, fmt.Errorf("llama: no tokens")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := checkWindow(d.cfg, c.n+len(tokens)); err != nil {
		return nil, err
	}
	V, L, KV, hd := d.cfg.Vocab, d.cfg.Layers, d.cfg.KVHeads, d.cfg.HeadDim
	ids := make([]int64, len(tokens))
	for i, t := range tokens {
		if t < 0 || int(t) >= V {
			return nil, fmt.Errorf("llama: token %d at position %d outside the vocabulary [0, %d)", t, i, V)
		}
		ids[i] = int64(t)
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.sess == nil {
		return nil, ErrClosed
	}
	S := int64(len(tokens))
	in, err := ort.NewTensor(ort.NewShape(1, S), ids)
	if err != nil {
		return nil, fmt.Errorf("llama: input tensor: %w", err)
	}
	defer in.Destroy()
	ins := []ort.Value{in}
	if c.kv == nil { // empty past: [1, KV, 0, hd]
		empty, err := ort.NewTensor(ort.NewShape(1, int64(KV), 0, int64(hd)), []float32{})
		if err != nil {
			return nil, fmt.Errorf("llama: empty cache tensor: %w", err)
		}
		defer empty.Destroy()
		for l := 0; l < 2*L; l++ {
			ins = append(ins, empty)
		}
	} else {
		for _, t := range c.kv {
			ins = append(ins, t)
		}
	}
	logits := make([]float32, int(S)*V)
	lt, err := ort.NewTensor(ort.NewShape(1, S, int64(V)), logits)
	if err != nil {
		return nil, fmt.Errorf("llama: output tensor: %w", err)
	}
	defer lt.Destroy()
	outs := []ort.Value{lt}
	total := int64(c.n) + S
	present := make([]*ort.Tensor[float32], 0, 2*L)
	fail := func() {
		for _, t := range present {
			t.Destroy()
		}
	}
	for l := 0; l < 2*L; l++ {
		buf := make([]float32, total*int64(KV*hd))
		t, err := ort.NewTensor(ort.NewShape(1, int64(KV), total, int64(hd)), buf)
		if err != nil {
			fail()
			return nil, fmt.Errorf("llama: cache tensor: %w", err)
		}
		present = append(present, t)
		outs = append(outs, t)
	}
	if err := runCancellable(ctx, d.sess, ins, outs, "decode"); err != nil {
		fail()
		return nil, err
	}
	for _, t := range c.kv {
		t.Destroy()
	}
	c.kv, c.n = present, int(total)
	return logits, nil
}
