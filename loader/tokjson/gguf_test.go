package tokjson

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/nwc-project/nwc/loader/gguf"
	"github.com/nwc-project/nwc/loader/tensor"
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
	add("<|endoftext|>", TokenTypeControl)
	add("<|im_start|>", TokenTypeControl)
	for _, r := range ByteAlphabet() {
		add(string(r), TokenTypeNormal)
	}
	for _, m := range []string{"Ġ t", "l l", "e ll", "h ell", "hell o", "h e", "Ġt he", "Ġ 1", "Ġ Ġ"} {
		a, b, _ := strings.Cut(m, " ")
		add(a+b, TokenTypeNormal)
		v.merges = append(v.merges, m)
	}
	add("<think>", TokenTypeUserDefined)
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

func TestFromGGUFMetadataJSON(t *testing.T) {
	v := newTinyVocab()
	data, err := FromGGUFMetadata(v.kvs("smollm"))
	if err != nil {
		t.Fatal(err)
	}
	var tj struct {
		AddedTokens []hfAddedToken `json:"added_tokens"`
		Normalizer  any            `json:"normalizer"`
		PreTok      any            `json:"pre_tokenizer"`
		Post        map[string]any `json:"post_processor"`
		Decoder     map[string]any `json:"decoder"`
		Model       struct {
			Type         string           `json:"type"`
			Unk          *string          `json:"unk_token"`
			IgnoreMerges bool             `json:"ignore_merges"`
			Vocab        map[string]int32 `json:"vocab"`
			Merges       [][2]string      `json:"merges"`
		} `json:"model"`
	}
	if err := json.Unmarshal(data, &tj); err != nil {
		t.Fatal(err)
	}
	wantPre := map[string]any{"type": "Sequence", "pretokenizers": []any{
		map[string]any{"type": "Digits", "individual_digits": true},
		map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
	}}
	if !reflect.DeepEqual(tj.PreTok, wantPre) {
		t.Errorf("pre_tokenizer %v", tj.PreTok)
	}
	if tj.Normalizer != nil || tj.Decoder["type"] != "ByteLevel" || tj.Post["type"] != "ByteLevel" {
		t.Errorf("normalizer %v, decoder %v, post %v", tj.Normalizer, tj.Decoder, tj.Post)
	}
	if tj.Model.Type != "BPE" || tj.Model.Unk != nil || tj.Model.IgnoreMerges || len(tj.Model.Vocab) != len(v.tokens) || len(tj.Model.Merges) != len(v.merges) {
		t.Errorf("model: %s unk %v ignore %v, %d tokens, %d merges", tj.Model.Type, tj.Model.Unk, tj.Model.IgnoreMerges, len(tj.Model.Vocab), len(tj.Model.Merges))
	}
	for tokStr, id := range tj.Model.Vocab {
		if v.tokens[id] != tokStr {
			t.Fatalf("vocab %q -> %d, want %q", tokStr, id, v.tokens[id])
		}
	}
	want := []hfAddedToken{
		{ID: 0, Content: "<|endoftext|>", Special: true},
		{ID: 1, Content: "<|im_start|>", Special: true},
		{ID: int(v.id["<think>"]), Content: "<think>"},
	}
	if !reflect.DeepEqual(tj.AddedTokens, want) {
		t.Errorf("added tokens %+v", tj.AddedTokens)
	}
	// Deterministic output.
	again, _ := FromGGUFMetadata(v.kvs("smollm"))
	if string(again) != string(data) {
		t.Error("two builds differ")
	}
}

func TestFromGGUFMetadataErrors(t *testing.T) {
	v := newTinyVocab()
	replace := func(key string, val gguf.Value) []gguf.KV {
		kvs := v.kvs("smollm")
		for i := range kvs {
			if kvs[i].Key == key {
				kvs[i].Value = val
			}
		}
		return kvs
	}
	drop := func(key string) []gguf.KV {
		var out []gguf.KV
		for _, kv := range v.kvs("smollm") {
			if kv.Key != key {
				out = append(out, kv)
			}
		}
		return out
	}
	dup := append([]string(nil), v.tokens...)
	dup[5] = dup[6]
	badType := append([]int32(nil), v.types...)
	badType[3] = 9
	cases := []struct {
		name string
		kvs  []gguf.KV
		want string
		is   error
	}{
		{"spm", replace("tokenizer.ggml.model", str("llama")), "only \"gpt2\"", ErrUnsupported},
		{"default pre", replace("tokenizer.ggml.pre", str("default")), "pre-tokenizer \"default\"", ErrUnsupported},
		{"no pre", drop("tokenizer.ggml.pre"), "tokenizer.ggml.pre is missing", ErrUnsupported},
		{"no model", drop("tokenizer.ggml.model"), "no tokenizer.ggml.model", nil},
		{"no merges", drop("tokenizer.ggml.merges"), "no tokenizer.ggml.merges", nil},
		{"no tokens", drop("tokenizer.ggml.tokens"), "no tokenizer.ggml.tokens", nil},
		{"dup", replace("tokenizer.ggml.tokens", strs(dup)), "appears twice", ErrUnsupported},
		{"types len", replace("tokenizer.ggml.token_type", i32s(v.types[:3])), "token types for", nil},
		{"bad type", replace("tokenizer.ggml.token_type", i32s(badType)), "unknown type 9", nil},
		{"bad merge", replace("tokenizer.ggml.merges", strs([]string{"a b c"})), "not two tokens", nil},
		{"merge oov", replace("tokenizer.ggml.merges", strs([]string{"ab c"})), "not in the vocabulary", nil},
		{"merge result oov", replace("tokenizer.ggml.merges", strs([]string{"a b"})), "merged token \"ab\"", nil},
		{"bos range", replace("tokenizer.ggml.bos_token_id", u32(100000)), "outside the vocabulary", nil},
		{"model type", replace("tokenizer.ggml.model", u32(1)), "not a string", nil},
		{"tokens type", replace("tokenizer.ggml.tokens", u32(1)), "not an array of strings", nil},
		{"invalid utf8", replace("tokenizer.ggml.tokens", strs(append(append([]string(nil), v.tokens[:len(v.tokens)-1]...), "\xff"))), "not valid UTF-8", nil},
	}
	for _, c := range cases {
		_, err := FromGGUFMetadata(c.kvs)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.name, err, c.want)
			continue
		}
		if c.is != nil && !errors.Is(err, c.is) {
			t.Errorf("%s: error %v does not wrap %v", c.name, err, c.is)
		}
	}
	// -1 (0xffffffff) is "no such token".
	sp, err := SpecialTokens(replace("tokenizer.ggml.padding_token_id", u32(0xffffffff)))
	if err != nil || sp.PAD != -1 {
		t.Errorf("padding -1: %+v, %v", sp, err)
	}
}

// fakeSource is a tensor.Source with assets only.
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
func TestJSONForSource(t *testing.T) {
	cache := t.TempDir()
	t.Setenv("NWC_CACHE", cache)
	v := newTinyVocab()
	kvs := v.kvs("smollm")
	meta, err := gguf.MarshalMetadataJSON(kvs)
	if err != nil {
		t.Fatal(err)
	}
	src := fakeSource{assets: []tensor.Asset{{Name: gguf.MetadataAsset, Data: meta}}}
	data, o, err := JSONForSource(src)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := CacheKey(kvs)
	wantPath := filepath.Join(cache, "tokenizers", key+".json")
	if o.Kind != "gguf-built" || o.Path != wantPath || o.Key != key || CachePath(key) != wantPath {
		t.Errorf("first call: %+v, want built at %s", o, wantPath)
	}
	if cached, err := os.ReadFile(wantPath); err != nil || string(cached) != string(data) {
		t.Errorf("cache file: %v", err)
	}
	if again, o, err := JSONForSource(src); err != nil || o.Kind != "gguf-cache" || string(again) != string(data) {
		t.Errorf("second call: %+v, %v", o, err)
	}
	both := fakeSource{assets: []tensor.Asset{{Name: gguf.MetadataAsset, Data: meta}, {Name: TokenizerAsset, Data: []byte("{}")}}}
	if got, o, err := JSONForSource(both); err != nil || o.Kind != "asset" || string(got) != "{}" {
		t.Errorf("asset source: %+v, %v", o, err)
	}
	if _, _, err := JSONForSource(fakeSource{}); !errors.Is(err, ErrNoTokenizer) {
		t.Errorf("no tokenizer: %v", err)
	}
}
