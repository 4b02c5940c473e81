//go:build cgo

package tokenizer

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/nwc-project/nwc/internal/tokentest"
	"github.com/nwc-project/nwc/loader/gguf"
	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/loader/tokjson"
)

func build(t *testing.T, kvs []gguf.KV) *Tokenizer {
	t.Helper()
	data, err := tokjson.FromGGUFMetadata(kvs)
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
	v := tokentest.NewTinyVocab()
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
		tok := build(t, v.KVs(c.pre))
		got, err := tok.Encode(c.text)
		if err != nil {
			t.Fatal(err)
		}
		if want := v.IDs(t, c.want...); !reflect.DeepEqual(got, want) {
			t.Errorf("pre %s: Encode(%q) = %v, want %v (%q)", c.pre, c.text, got, want, c.want)
		}
		back, err := tok.Decode(got)
		if err != nil || back != c.text {
			t.Errorf("pre %s: Decode(Encode(%q)) = %q, %v", c.pre, c.text, back, err)
		}
		if tok.VocabSize() != len(v.Tokens) {
			t.Errorf("VocabSize %d, want %d", tok.VocabSize(), len(v.Tokens))
		}
	}
}

func TestLlama3FamilyAndTemplates(t *testing.T) {
	v := tokentest.NewTinyVocab()
	kvs := v.KVs("llama-bpe")
	kvs = kvs[:len(kvs)-1] // no add_bos_token: the llama3 default (true) applies
	data, err := tokjson.FromGGUFMetadata(kvs)
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	for _, want := range []string{`"ignore_merges":true`, `"type":"Split"`, `"TemplateProcessing"`, `"use_regex":false`} {
		if !strings.Contains(s, want) {
			t.Errorf("llama-bpe tokenizer.json lacks %s", want)
		}
	}
	sp, err := tokjson.SpecialTokens(kvs)
	if err != nil || !sp.AddBOS || sp.BOS != 1 || sp.EOS != 0 || sp.UNK != 0 || sp.PAD != 0 || sp.AddEOS {
		t.Errorf("special %+v, %v", sp, err)
	}
	tok := build(t, kvs)
	// Encode never adds BOS.
	ids, err := tok.Encode("hello")
	if err != nil || !reflect.DeepEqual(ids, v.IDs(t, "hello")) {
		t.Errorf("Encode(hello) = %v, %v", ids, err)
	}
	// Both BOS and EOS.
	tok2 := build(t, v.KVs("smollm", gguf.KV{Key: "tokenizer.ggml.add_eos_token", Value: tokentest.Bool(true)}))
	if ids, _ := tok2.Encode("hello"); !reflect.DeepEqual(ids, v.IDs(t, "hello")) {
		t.Errorf("Encode(hello) with add_eos = %v", ids)
	}
}

func TestEncodeRefusesBadText(t *testing.T) {
	tok := build(t, tokentest.NewTinyVocab().KVs("smollm"))
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

func TestForSourceAndCache(t *testing.T) {
	cache := t.TempDir()
	t.Setenv("NWC_CACHE", cache)
	v := tokentest.NewTinyVocab()
	kvs := v.KVs("smollm")
	meta, err := gguf.MarshalMetadataJSON(kvs)
	if err != nil {
		t.Fatal(err)
	}
	src := tokentest.AssetSource{List: []tensor.Asset{{Name: gguf.MetadataAsset, Data: meta}}}

	data, o, err := tokjson.JSONForSource(src)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := tokjson.CacheKey(kvs)
	wantPath := filepath.Join(cache, "tokenizers", key+".json")
	if o.Kind != "gguf-built" || o.Path != wantPath || o.Key != key {
		t.Errorf("first call: %+v, want built at %s", o, wantPath)
	}
	if cached, err := os.ReadFile(wantPath); err != nil || string(cached) != string(data) {
		t.Errorf("cache file: %v", err)
	}
	_, o, err = tokjson.JSONForSource(src)
	if err != nil || o.Kind != "gguf-cache" {
		t.Errorf("second call: %+v, %v", o, err)
	}
	// The key ignores non-tokenizer metadata, and follows tokenizer changes.
	k2, _ := tokjson.CacheKey(append(kvs, gguf.KV{Key: "general.name", Value: tokentest.Str("x")}))
	k3, _ := tokjson.CacheKey(v.KVs("gpt2"))
	if k2 != key || k3 == key {
		t.Errorf("cache keys: %s %s %s", key, k2, k3)
	}

	tok, err := ForSource(src)
	if err != nil {
		t.Fatal(err)
	}
	ids, _ := tok.Encode("hello the")
	tok.Close()
	if !reflect.DeepEqual(ids, v.IDs(t, "hello", "Ġthe")) {
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
	gpt2JSON, _ := tokjson.FromGGUFMetadata(v.KVs("gpt2"))
	both := tokentest.AssetSource{List: []tensor.Asset{{Name: gguf.MetadataAsset, Data: meta}, {Name: tokjson.TokenizerAsset, Data: gpt2JSON}}}
	_, o, err = tokjson.JSONForSource(both)
	if err != nil || o.Kind != "asset" {
		t.Errorf("asset source: %+v, %v", o, err)
	}
	tok, err = ForSource(both)
	if err != nil {
		t.Fatal(err)
	}
	ids, _ = tok.Encode(" 1")
	tok.Close()
	if !reflect.DeepEqual(ids, v.IDs(t, "Ġ1")) {
		t.Errorf("asset tokenizer: %v", ids)
	}

	if _, err := ForSource(tokentest.AssetSource{}); !errors.Is(err, tokjson.ErrNoTokenizer) {
		t.Errorf("no tokenizer: %v", err)
	}
	// Unwritable cache: still works, no path.
	t.Setenv("NWC_CACHE", filepath.Join(wantPath, "not-a-dir"))
	_, o, err = tokjson.JSONForSource(src)
	if err != nil || o.Kind != "gguf-built" || o.Path != "" {
		t.Errorf("unwritable cache: %+v, %v", o, err)
	}
}
