package main

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/nwc-project/nwc/internal/tokentest"
	"github.com/nwc-project/nwc/loader"
	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/gguf"
	"github.com/nwc-project/nwc/loader/tensor"
)

// writeTinyGGUF writes a 1-layer F32 Llama GGUF with a tokenizer.
func writeTinyGGUF(t *testing.T, path string) {
	t.Helper()
	v := tokentest.NewTinyVocab()
	u := func(x int) gguf.Value { return tokentest.U32(uint32(x)) }
	kvs := v.KVs("smollm",
		gguf.KV{Key: "llama.block_count", Value: u(1)},
		gguf.KV{Key: "llama.context_length", Value: u(64)},
		gguf.KV{Key: "llama.embedding_length", Value: u(32)},
		gguf.KV{Key: "llama.feed_forward_length", Value: u(64)},
		gguf.KV{Key: "llama.attention.head_count", Value: u(2)},
		gguf.KV{Key: "llama.attention.head_count_kv", Value: u(1)},
	)
	V := int64(len(v.Tokens))
	shapes := map[string][]int64{
		"token_embd.weight": {V, 32}, "output_norm.weight": {32},
		"blk.0.attn_norm.weight": {32}, "blk.0.ffn_norm.weight": {32},
		"blk.0.attn_q.weight": {32, 32}, "blk.0.attn_k.weight": {16, 32}, "blk.0.attn_v.weight": {16, 32},
		"blk.0.attn_output.weight": {32, 32}, "blk.0.ffn_gate.weight": {64, 32}, "blk.0.ffn_up.weight": {64, 32},
		"blk.0.ffn_down.weight": {32, 64},
	}
	var ts []gguf.WriteTensor
	for _, n := range []string{"token_embd.weight", "blk.0.attn_norm.weight", "blk.0.attn_q.weight", "blk.0.attn_k.weight",
		"blk.0.attn_v.weight", "blk.0.attn_output.weight", "blk.0.ffn_norm.weight", "blk.0.ffn_gate.weight",
		"blk.0.ffn_up.weight", "blk.0.ffn_down.weight", "output_norm.weight"} {
		ts = append(ts, gguf.WriteTensor{Name: n, Type: gguf.TypeF32, Shape: shapes[n]})
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := gguf.NewWriter(f, kvs, ts)
	if err != nil {
		t.Fatal(err)
	}
	for i, wt := range ts {
		x := make([]float32, tensor.NumElements(wt.Shape))
		for j := range x {
			x[j] = float32(math.Sin(float64(j*(i+2)) * 0.37))
		}
		if err := w.WriteTensor(wt.Name, tensor.F32Bytes(x, nil)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// tinyNWC writes the tiny GGUF into dir and compresses it with the given
// codec arguments into dir/m.nwc.
func tinyNWC(t *testing.T, dir string, codecArgs ...string) string {
	t.Helper()
	in := filepath.Join(dir, "m.gguf")
	writeTinyGGUF(t, in)
	nwc := filepath.Join(dir, "m.nwc")
	args := append([]string{"--model", in, "-o", nwc, "-q"}, codecArgs...)
	if _, err := capture(t, func() error { return runCompress(context.Background(), args) }); err != nil {
		t.Fatal(err)
	}
	return nwc
}

func TestCLIDecompressFormats(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	nwc := tinyNWC(t, dir, "--codec", "lossless")
	for _, c := range []struct {
		args  []string
		out   string
		dtype tensor.DType
	}{
		{[]string{"--dtype", "f16"}, "a.gguf", tensor.F16},
		{[]string{"--format", "gguf", "--dtype", "q8_0"}, "b.bin", tensor.Q8_0},
		{nil, "hf", tensor.F32},
		{[]string{"--format", "safetensors", "--dtype", "bf16"}, "hf16", tensor.BF16},
	} {
		out := filepath.Join(dir, c.out)
		args := append([]string{nwc, "-q", "-o", out}, c.args...)
		if _, err := capture(t, func() error { return runDecompress(ctx, args) }); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		src, format, err := loader.Open(out, codec.Env{})
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		ti, _ := tensor.Find(src.Tensors(), map[bool]string{true: "model.layers.0.mlp.up_proj.weight", false: "blk.0.ffn_up.weight"}[format == loader.FormatSafetensors])
		if ti.DType != c.dtype {
			t.Errorf("%v: %s ffn_up is %s, want %s", args, format, ti.DType, c.dtype)
		}
		src.Close()
	}
	for _, bad := range [][]string{
		{"--format", "onnx"},
		{"--dtype", "q4_0"},
		{"--format", "safetensors", "--dtype", "q8_0"},
		{"--format", "tensors", "--dtype", "f16"},
	} {
		args := append([]string{nwc, "-q", "-o", filepath.Join(dir, "x")}, bad...)
		if _, err := capture(t, func() error { return runDecompress(ctx, args) }); !errors.Is(err, errUsage) {
			t.Errorf("%v: %v, want a usage error", bad, err)
		}
	}
	// The safetensors-file source has no GGUF metadata: a clear error.
	st := filepath.Join(dir, "plain.safetensors")
	writeModel(t, st)
	_, err := capture(t, func() error { return runDecompress(ctx, []string{st, "-q", "-o", filepath.Join(dir, "p.gguf")}) })
	if !errors.Is(err, tensor.ErrUnsupported) {
		t.Errorf("gguf from safetensors: %v", err)
	}
}
