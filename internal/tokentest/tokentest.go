// Package tokentest is test support for the tokenizer packages
// (loader/tokjson, plugin/tokenizer): GGUF metadata value helpers, a tiny
// byte-level BPE vocabulary as GGUF metadata, and a source that carries only
// assets. It is imported only from _test.go files.
package tokentest

import (
	"strings"
	"testing"

	"github.com/nwc-project/nwc/loader/gguf"
	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/loader/tokjson"
)

// Str, U32, Bool, Strs and I32s make GGUF metadata values.
func Str(s string) gguf.Value { return gguf.Value{Type: gguf.ValueString, V: s} }
func U32(x uint32) gguf.Value { return gguf.Value{Type: gguf.ValueUint32, V: x} }
func Bool(b bool) gguf.Value {
	return gguf.Value{Type: gguf.ValueBool, V: b}
}
func Strs(s []string) gguf.Value {
	return gguf.Value{Type: gguf.ValueArray, Elem: gguf.ValueString, V: s}
}
func I32s(x []int32) gguf.Value {
	return gguf.Value{Type: gguf.ValueArray, Elem: gguf.ValueInt32, V: x}
}

// TinyVocab is a byte-level BPE vocabulary: two control tokens, the 256
// byte characters, a few merges, and one user-defined token.
type TinyVocab struct {
	Tokens []string
	Types  []int32
	Merges []string
	ID     map[string]int32
}

// NewTinyVocab builds the vocabulary.
func NewTinyVocab() *TinyVocab {
	v := &TinyVocab{ID: map[string]int32{}}
	add := func(tok string, typ int32) {
		v.ID[tok] = int32(len(v.Tokens))
		v.Tokens = append(v.Tokens, tok)
		v.Types = append(v.Types, typ)
	}
	add("<|endoftext|>", tokjson.TokenTypeControl)
	add("<|im_start|>", tokjson.TokenTypeControl)
	for _, r := range tokjson.ByteAlphabet() {
		add(string(r), tokjson.TokenTypeNormal)
	}
	for _, m := range []string{"Ġ t", "l l", "e ll", "h ell", "hell o", "h e", "Ġt he", "Ġ 1", "Ġ Ġ"} {
		a, b, _ := strings.Cut(m, " ")
		add(a+b, tokjson.TokenTypeNormal)
		v.Merges = append(v.Merges, m)
	}
	add("<think>", tokjson.TokenTypeUserDefined)
	return v
}

// KVs is the vocabulary as GGUF metadata with tokenizer.ggml.pre = pre.
func (v *TinyVocab) KVs(pre string, extra ...gguf.KV) []gguf.KV {
	kvs := []gguf.KV{
		{Key: "general.architecture", Value: Str("llama")},
		{Key: "tokenizer.ggml.model", Value: Str("gpt2")},
		{Key: "tokenizer.ggml.pre", Value: Str(pre)},
		{Key: "tokenizer.ggml.tokens", Value: Strs(v.Tokens)},
		{Key: "tokenizer.ggml.token_type", Value: I32s(v.Types)},
		{Key: "tokenizer.ggml.merges", Value: Strs(v.Merges)},
		{Key: "tokenizer.ggml.bos_token_id", Value: U32(1)},
		{Key: "tokenizer.ggml.eos_token_id", Value: U32(0)},
		{Key: "tokenizer.ggml.unknown_token_id", Value: U32(0)},
		{Key: "tokenizer.ggml.padding_token_id", Value: U32(0)},
		{Key: "tokenizer.ggml.add_bos_token", Value: Bool(false)},
	}
	return append(kvs, extra...)
}

// IDs maps tokens to their ids.
func (v *TinyVocab) IDs(t testing.TB, toks ...string) []int32 {
	t.Helper()
	out := make([]int32, len(toks))
	for i, s := range toks {
		id, ok := v.ID[s]
		if !ok {
			t.Fatalf("no token %q", s)
		}
		out[i] = id
	}
	return out
}

// AssetSource is a tensor.Source that carries only assets.
type AssetSource struct{ List []tensor.Asset }

func (f AssetSource) Tensors() []tensor.Info { return nil }
func (f AssetSource) Assets() []tensor.Asset { return f.List }
func (f AssetSource) Close() error           { return nil }
func (f AssetSource) ReadRaw(string, []byte) ([]byte, error) {
	return nil, tensor.ErrNotFound
}
func (f AssetSource) ReadFloat32(string, []float32) ([]float32, error) {
	return nil, tensor.ErrNotFound
}
