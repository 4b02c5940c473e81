package tokjson_test

import (
	"encoding/json"
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

// addedToken is one entry of tokenizer.json's added_tokens (the Hugging Face
// layout the builder must write).
type addedToken struct {
	ID         int    `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`
}

// tokenizerJSON is the part of a tokenizer.json the tests look at.
type tokenizerJSON struct {
	AddedTokens []addedToken   `json:"added_tokens"`
	Normalizer  any            `json:"normalizer"`
	PreTok      any            `json:"pre_tokenizer"`
	Post        map[string]any `json:"post_processor"`
	Decoder     map[string]any `json:"decoder"`
	Model       struct {
		Type         string           `json:"type"`
		Unk          *string          `json:"unk_token"`
		ByteFallback bool             `json:"byte_fallback"`
		FuseUnk      bool             `json:"fuse_unk"`
		IgnoreMerges bool             `json:"ignore_merges"`
		Vocab        map[string]int32 `json:"vocab"`
		Merges       [][2]string      `json:"merges"`
	} `json:"model"`
}

func TestFromGGUFMetadataJSON(t *testing.T) {
	v := tokentest.NewTinyVocab()
	data, err := tokjson.FromGGUFMetadata(v.KVs("smollm"))
	if err != nil {
		t.Fatal(err)
	}
	var tj tokenizerJSON
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
	if tj.Model.Type != "BPE" || tj.Model.Unk != nil || tj.Model.IgnoreMerges || len(tj.Model.Vocab) != len(v.Tokens) || len(tj.Model.Merges) != len(v.Merges) {
		t.Errorf("model: %s unk %v ignore %v, %d tokens, %d merges", tj.Model.Type, tj.Model.Unk, tj.Model.IgnoreMerges, len(tj.Model.Vocab), len(tj.Model.Merges))
	}
	for tokStr, id := range tj.Model.Vocab {
		if v.Tokens[id] != tokStr {
			t.Fatalf("vocab %q -> %d, want %q", tokStr, id, v.Tokens[id])
		}
	}
	want := []addedToken{
		{ID: 0, Content: "<|endoftext|>", Special: true},
		{ID: 1, Content: "<|im_start|>", Special: true},
		{ID: int(v.ID["<think>"]), Content: "<think>"},
	}
	if !reflect.DeepEqual(tj.AddedTokens, want) {
		t.Errorf("added tokens %+v", tj.AddedTokens)
	}
	// Deterministic output.
	again, _ := tokjson.FromGGUFMetadata(v.KVs("smollm"))
	if string(again) != string(data) {
		t.Error("two builds differ")
	}
}

// errCase is metadata FromGGUFMetadata must refuse: its error contains want
// and wraps is (when not nil).
type errCase struct {
	name string
	kvs  []gguf.KV
	want string
	is   error
}

func checkErrors(t *testing.T, cases []errCase) {
	t.Helper()
	for _, c := range cases {
		_, err := tokjson.FromGGUFMetadata(c.kvs)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.name, err, c.want)
			continue
		}
		if c.is != nil && !errors.Is(err, c.is) {
			t.Errorf("%s: error %v does not wrap %v", c.name, err, c.is)
		}
	}
}

func TestFromGGUFMetadataErrors(t *testing.T) {
	v := tokentest.NewTinyVocab()
	replace := func(key string, val gguf.Value) []gguf.KV {
		kvs := v.KVs("smollm")
		for i := range kvs {
			if kvs[i].Key == key {
				kvs[i].Value = val
			}
		}
		return kvs
	}
	drop := func(key string) []gguf.KV {
		var out []gguf.KV
		for _, kv := range v.KVs("smollm") {
			if kv.Key != key {
				out = append(out, kv)
			}
		}
		return out
	}
	dup := append([]string(nil), v.Tokens...)
	dup[5] = dup[6]
	badType := append([]int32(nil), v.Types...)
	badType[3] = 9
	cases := []errCase{
		{"wpm", replace("tokenizer.ggml.model", tokentest.Str("bert")), "tokenizer.ggml.model \"bert\"", tokjson.ErrUnsupported},
		{"default pre", replace("tokenizer.ggml.pre", tokentest.Str("default")), "pre-tokenizer \"default\"", tokjson.ErrUnsupported},
		{"no pre", drop("tokenizer.ggml.pre"), "tokenizer.ggml.pre is missing", tokjson.ErrUnsupported},
		{"no model", drop("tokenizer.ggml.model"), "no tokenizer.ggml.model", nil},
		{"no merges", drop("tokenizer.ggml.merges"), "no tokenizer.ggml.merges", nil},
		{"no tokens", drop("tokenizer.ggml.tokens"), "no tokenizer.ggml.tokens", nil},
		{"dup", replace("tokenizer.ggml.tokens", tokentest.Strs(dup)), "appears twice", tokjson.ErrUnsupported},
		{"types len", replace("tokenizer.ggml.token_type", tokentest.I32s(v.Types[:3])), "token types for", nil},
		{"bad type", replace("tokenizer.ggml.token_type", tokentest.I32s(badType)), "unknown type 9", nil},
		{"bad merge", replace("tokenizer.ggml.merges", tokentest.Strs([]string{"a b c"})), "not two tokens", nil},
		{"merge oov", replace("tokenizer.ggml.merges", tokentest.Strs([]string{"ab c"})), "not in the vocabulary", nil},
		{"merge result oov", replace("tokenizer.ggml.merges", tokentest.Strs([]string{"a b"})), "merged token \"ab\"", nil},
		{"bos range", replace("tokenizer.ggml.bos_token_id", tokentest.U32(100000)), "outside the vocabulary", nil},
		{"model type", replace("tokenizer.ggml.model", tokentest.U32(1)), "not a string", nil},
		{"tokens type", replace("tokenizer.ggml.tokens", tokentest.U32(1)), "not an array of strings", nil},
		{"invalid utf8", replace("tokenizer.ggml.tokens", tokentest.Strs(append(append([]string(nil), v.Tokens[:len(v.Tokens)-1]...), "\xff"))), "not valid UTF-8", nil},
	}
	checkErrors(t, cases)
	// -1 (0xffffffff) is "no such token".
	sp, err := tokjson.SpecialTokens(replace("tokenizer.ggml.padding_token_id", tokentest.U32(0xffffffff)))
	if err != nil || sp.PAD != -1 {
		t.Errorf("padding -1: %+v, %v", sp, err)
	}
}

// fakeSource is a tensor.Source with assets only.
func TestJSONForSource(t *testing.T) {
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
	if o.Kind != "gguf-built" || o.Path != wantPath || o.Key != key || tokjson.CachePath(key) != wantPath {
		t.Errorf("first call: %+v, want built at %s", o, wantPath)
	}
	if cached, err := os.ReadFile(wantPath); err != nil || string(cached) != string(data) {
		t.Errorf("cache file: %v", err)
	}
	if again, o, err := tokjson.JSONForSource(src); err != nil || o.Kind != "gguf-cache" || string(again) != string(data) {
		t.Errorf("second call: %+v, %v", o, err)
	}
	both := tokentest.AssetSource{List: []tensor.Asset{{Name: gguf.MetadataAsset, Data: meta}, {Name: tokjson.TokenizerAsset, Data: []byte("{}")}}}
	if got, o, err := tokjson.JSONForSource(both); err != nil || o.Kind != "asset" || string(got) != "{}" {
		t.Errorf("asset source: %+v, %v", o, err)
	}
	if _, _, err := tokjson.JSONForSource(tokentest.AssetSource{}); !errors.Is(err, tokjson.ErrNoTokenizer) {
		t.Errorf("no tokenizer: %v", err)
	}
}
