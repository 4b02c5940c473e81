//go:build cgo

package tokenizer

// Test vocabulary helpers (a copy of loader/tokjson's, which are unexported).

import (
	"strings"
	"testing"

	"github.com/nwc-project/nwc/loader/gguf"
	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/loader/tokjson"
)

func str(s string) gguf.Value { return gguf.Value{Type: gguf.ValueString, V: s} }
func u32(x uint32) gguf.Value { return gguf.Value{Type: gguf.ValueUint32, V: x} }
func boolean(b bool) gguf.Value {
	return gguf.Value{Type: gguf.ValueBool, V: b}
}
func strs(s []string) gguf.Value {
	return gguf.Value{Type: gguf.ValueArray, Elem: gguf.ValueString, V: s}
}
func i32s(x []int32) gguf.Value {
	return gguf.Value{Type: gguf.ValueArray, Elem: gguf.ValueInt32, V: x}
}

// tinyVocab is a byte-level BPE vocabulary: two control tokens, the 256
// byte characters, a few merges, and one user-defined token.
type tinyVocab struct {
	tokens []string
	types  []int32
	merges []string
	id     map[string]int32
}

func newTinyVocab() *tinyVocab {
	v := &tinyVocab{id: map[string]int32{}}
	add := func(tok string, typ int32) {
		v.id[tok] = int32(len(v.tokens))
		v.tokens = append(v.tokens, tok)
		v.types = append(v.types, typ)
	}
	add("<|endoftext|>", tokjson.TokenTypeControl)
	add("<|im_start|>", tokjson.TokenTypeControl)
	for _, r := range tokjson.ByteAlphabet() {
		add(string(r), tokjson.TokenTypeNormal)
	}
	for _, m := range []string{"Ġ t", "l l", "e ll", "h ell", "hell o", "h e", "Ġt he", "Ġ 1", "Ġ Ġ"} {
		a, b, _ := strings.Cut(m, " ")
		add(a+b, tokjson.TokenTypeNormal)
		v.merges = append(v.merges, m)
	}
	add("<think>", tokjson.TokenTypeUserDefined)
	return v
}

func (v *tinyVocab) kvs(pre string, extra ...gguf.KV) []gguf.KV {
	kvs := []gguf.KV{
		{Key: "general.architecture", Value: str("llama")},
		{Key: "tokenizer.ggml.model", Value: str("gpt2")},
		{Key: "tokenizer.ggml.pre", Value: str(pre)},
		{Key: "tokenizer.ggml.tokens", Value: strs(v.tokens)},
		{Key: "tokenizer.ggml.token_type", Value: i32s(v.types)},
		{Key: "tokenizer.ggml.merges", Value: strs(v.merges)},
		{Key: "tokenizer.ggml.bos_token_id", Value: u32(1)},
		{Key: "tokenizer.ggml.eos_token_id", Value: u32(0)},
		{Key: "tokenizer.ggml.unknown_token_id", Value: u32(0)},
		{Key: "tokenizer.ggml.padding_token_id", Value: u32(0)},
		{Key: "tokenizer.ggml.add_bos_token", Value: boolean(false)},
	}
	return append(kvs, extra...)
}

func (v *tinyVocab) ids(t *testing.T, toks ...string) []int32 {
	t.Helper()
	out := make([]int32, len(toks))
	for i, s := range toks {
		id, ok := v.id[s]
		if !ok {
			t.Fatalf("no token %q", s)
		}
		out[i] = id
	}
	return out
}

type fakeSource struct{ assets []tensor.Asset }

func (f fakeSource) Tensors() []tensor.Info { return nil }
func (f fakeSource) Assets() []tensor.Asset { return f.assets }
func (f fakeSource) Close() error           { return nil }
func (f fakeSource) ReadRaw(string, []byte) ([]byte, error) {
	return nil, tensor.ErrNotFound
}
func (f fakeSource) ReadFloat32(string, []float32) ([]float32, error) {
	return nil, tensor.ErrNotFound
}

// TestJSONForSource: the tokenizer.json of a source without loading it
// (the part that builds without cgo).
