package tokenizer

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
	add("<|endoftext|>", tokenTypeControl)
	add("<|im_start|>", tokenTypeControl)
	for _, r := range byteAlphabet() {
		add(string(r), tokenTypeNormal)
	}
	for _, m := range []string{"Ġ t", "l l", "e ll", "h ell", "hell o", "h e", "Ġt he", "Ġ 1", "Ġ Ġ"} {
		a, b, _ := strings.Cut(m, " ")
		add(a+b, tokenTypeNormal)
		v.merges = append(v.merges, m)
	}
	add("<think>", tokenTypeUserDefined)
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

func build(t *testing.T, kvs []gguf.KV) *Tokenizer {
	t.Helper()
	data, err := FromGGUFMetadata(kvs)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := FromBytes(data)
	if err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	t.Cleanup(func() { tok.Close() })
	return tok
}

func TestFromGGUFMetadataEncodes(t *testing.T) {
	v := newTinyVocab()
	cases := []struct {
		pre, text string
		want      []string
	}{
		// StarCoder family: digits are isolated before the GPT-2 split, so
		// " 1" never becomes "Ġ1" and "  1" keeps its spaces together.
		{"smollm", "hello the 12", []string{"hello", "Ġthe", "Ġ", "1", "2"}},
		{"smollm", "a  1", []string{"a", "ĠĠ", "1"}},
		{"smollm", "<|endoftext|>hello<think> the", []string{"<|endoftext|>", "hello", "<think>", "Ġthe"}},
		// GPT-2: " 12" is one pre-token.
		{"gpt2", "hello the 12", []string{"hello", "Ġthe", "Ġ1", "2"}},
		{"gpt2", "a  1", []string{"a", "Ġ", "Ġ1"}},
		// Non-ASCII text goes through the byte alphabet.
		{"smollm", "é", []string{"Ã", "©"}},
	}
	for _, c := range cases {
		tok := build(t, v.kvs(c.pre))
		got, err := tok.Encode(c.text)
		if err != nil {
			t.Fatal(err)
		}
		if want := v.ids(t, c.want...); !reflect.DeepEqual(got, want) {
			t.Errorf("pre %s: Encode(%q) = %v, want %v (%q)", c.pre, c.text, got, want, c.want)
		}
		back, err := tok.Decode(got)
		if err != nil || back != c.text {
			t.Errorf("pre %s: Decode(Encode(%q)) = %q, %v", c.pre, c.text, back, err)
		}
		if tok.VocabSize() != len(v.tokens) {
			t.Errorf("VocabSize %d, want %d", tok.VocabSize(), len(v.tokens))
		}
	}
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

func TestLlama3FamilyAndTemplates(t *testing.T) {
	v := newTinyVocab()
	kvs := v.kvs("llama-bpe")
	kvs = kvs[:len(kvs)-1] // no add_bos_token: the llama3 default (true) applies
	data, err := FromGGUFMetadata(kvs)
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	for _, want := range []string{`"ignore_merges":true`, `"type":"Split"`, `"TemplateProcessing"`, `"use_regex":false`} {
		if !strings.Contains(s, want) {
			t.Errorf("llama-bpe tokenizer.json lacks %s", want)
		}
	}
	sp, err := SpecialTokens(kvs)
	if err != nil || !sp.AddBOS || sp.BOS != 1 || sp.EOS != 0 || sp.UNK != 0 || sp.PAD != 0 || sp.AddEOS {
		t.Errorf("special %+v, %v", sp, err)
	}
	tok := build(t, kvs)
	// Encode never adds BOS.
	ids, err := tok.Encode("hello")
	if err != nil || !reflect.DeepEqual(ids, v.ids(t, "hello")) {
		t.Errorf("Encode(hello) = %v, %v", ids, err)
	}
	// Both BOS and EOS.
	tok2 := build(t, v.kvs("smollm", gguf.KV{Key: "tokenizer.ggml.add_eos_token", Value: boolean(true)}))
	if ids, _ := tok2.Encode("hello"); !reflect.DeepEqual(ids, v.ids(t, "hello")) {
		t.Errorf("Encode(hello) with add_eos = %v", ids)
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

func TestEncodeRefusesBadText(t *testing.T) {
	tok := build(t, newTinyVocab().kvs("smollm"))
	if _, err := tok.Encode("a\xffb"); err == nil {
		t.Error("invalid UTF-8 accepted")
	}
	if _, err := tok.Encode("a\x00b"); err == nil {
		t.Error("NUL accepted")
	}
	if ids, err := tok.Encode(""); err != nil || len(ids) != 0 {
		t.Errorf("Encode(\"\") = %v, %v", ids, err)
	}
	if _, err := tok.Decode([]int32{-1}); err == nil {
		t.Error("negative id decoded")
	}
	if _, err := tok.Decode([]int32{int32(tok.VocabSize())}); err == nil {
		t.Error("id past the vocabulary decoded")
	}
	tok.Close()
	if _, err := tok.Encode("a"); !errors.Is(err, ErrClosed) {
		t.Errorf("Encode after Close: %v", err)
	}
	if err := tok.Close(); err != nil {
		t.Error(err)
	}
	if _, err := FromBytes(nil); err == nil {
		t.Error("empty tokenizer.json accepted")
	}
	if _, err := FromBytes([]byte("{")); err == nil {
		t.Error("broken tokenizer.json accepted")
	}
	if _, err := FromFile(filepath.Join(t.TempDir(), "none.json")); err == nil {
		t.Error("missing file accepted")
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

func TestForSourceAndCache(t *testing.T) {
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
	if o.Kind != "gguf-built" || o.Path != wantPath || o.Key != key {
		t.Errorf("first call: %+v, want built at %s", o, wantPath)
	}
	if cached, err := os.ReadFile(wantPath); err != nil || string(cached) != string(data) {
		t.Errorf("cache file: %v", err)
	}
	_, o, err = JSONForSource(src)
	if err != nil || o.Kind != "gguf-cache" {
		t.Errorf("second call: %+v, %v", o, err)
	}
	// The key ignores non-tokenizer metadata, and follows tokenizer changes.
	k2, _ := CacheKey(append(kvs, gguf.KV{Key: "general.name", Value: str("x")}))
	k3, _ := CacheKey(v.kvs("gpt2"))
	if k2 != key || k3 == key {
		t.Errorf("cache keys: %s %s %s", key, k2, k3)
	}

	tok, err := ForSource(src)
	if err != nil {
		t.Fatal(err)
	}
	ids, _ := tok.Encode("hello the")
	tok.Close()
	if !reflect.DeepEqual(ids, v.ids(t, "hello", "Ġthe")) {
		t.Errorf("ForSource tokenizer: %v", ids)
	}
	// A damaged cache entry is rebuilt.
	os.WriteFile(wantPath, []byte("{broken"), 0o644)
	tok, err = ForSource(src)
	if err != nil {
		t.Fatal(err)
	}
	tok.Close()
	if cached, _ := os.ReadFile(wantPath); string(cached) != string(data) {
		t.Error("damaged cache entry not rebuilt")
	}

	// A tokenizer.json asset wins over GGUF metadata.
	gpt2JSON, _ := FromGGUFMetadata(v.kvs("gpt2"))
	both := fakeSource{assets: []tensor.Asset{{Name: gguf.MetadataAsset, Data: meta}, {Name: TokenizerAsset, Data: gpt2JSON}}}
	_, o, err = JSONForSource(both)
	if err != nil || o.Kind != "asset" {
		t.Errorf("asset source: %+v, %v", o, err)
	}
	tok, err = ForSource(both)
	if err != nil {
		t.Fatal(err)
	}
	ids, _ = tok.Encode(" 1")
	tok.Close()
	if !reflect.DeepEqual(ids, v.ids(t, "Ġ1")) {
		t.Errorf("asset tokenizer: %v", ids)
	}

	if _, err := ForSource(fakeSource{}); !errors.Is(err, ErrNoTokenizer) {
		t.Errorf("no tokenizer: %v", err)
	}
	// Unwritable cache: still works, no path.
	t.Setenv("NWC_CACHE", filepath.Join(wantPath, "not-a-dir"))
	_, o, err = JSONForSource(src)
	if err != nil || o.Kind != "gguf-built" || o.Path != "" {
		t.Errorf("unwritable cache: %+v, %v", o, err)
	}
}
