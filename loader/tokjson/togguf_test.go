package tokjson_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"

	"github.com/nwc-project/nwc/internal/tokentest"
	"github.com/nwc-project/nwc/loader/gguf"
	"github.com/nwc-project/nwc/loader/tokjson"
)

func kvMap(kvs []gguf.KV) map[string]gguf.Value {
	m := map[string]gguf.Value{}
	for _, kv := range kvs {
		m[kv.Key] = kv.Value
	}
	return m
}

// tokenizer.json -> tokenizer.ggml.* -> tokenizer.json gives the same file,
// for each pre-tokenizer llama.cpp names, with BOS added or not.
func TestToGGUFMetadataRoundTrip(t *testing.T) {
	v := tokentest.NewTinyVocab()
	for _, pre := range []string{"gpt2", "smollm", "llama-bpe"} {
		for _, addBOS := range []bool{false, true} {
			kvs := v.KVs(pre, gguf.KV{Key: "tokenizer.ggml.add_bos_token", Value: tokentest.Bool(addBOS)})
			kvs = append(kvs[:len(kvs)-2], kvs[len(kvs)-1]) // drop the default add_bos_token
			tj, err := tokjson.FromGGUFMetadata(kvs)
			if err != nil {
				t.Fatal(err)
			}
			cfg := []byte(`{"bos_token": "<|im_start|>", "eos_token": {"content": "<|endoftext|>"}, "chat_template": "{{ x }}"}`)
			back, err := tokjson.ToGGUFMetadata(tj, cfg)
			if err != nil {
				t.Fatalf("%s: %v", pre, err)
			}
			m := kvMap(back)
			if s, _ := m["tokenizer.ggml.pre"].Str(); s != pre {
				t.Errorf("pre %q, want %q", s, pre)
			}
			if b, _ := m["tokenizer.ggml.add_bos_token"].Bool(); b != addBOS {
				t.Errorf("%s: add_bos %v, want %v", pre, b, addBOS)
			}
			if id, _ := m["tokenizer.ggml.bos_token_id"].Uint(); id != 1 {
				t.Errorf("bos id %d", id)
			}
			if id, _ := m["tokenizer.ggml.eos_token_id"].Uint(); id != 0 {
				t.Errorf("eos id %d", id)
			}
			if s, _ := m["tokenizer.chat_template"].Str(); s != "{{ x }}" {
				t.Errorf("chat template %q", s)
			}
			again, err := tokjson.FromGGUFMetadata(back)
			if err != nil || !bytes.Equal(again, tj) {
				t.Errorf("%s add_bos=%v: tokenizer.json differs after the round trip (%v)", pre, addBOS, err)
			}
		}
	}
}

func TestToGGUFMetadataRefuses(t *testing.T) {
	v := tokentest.NewTinyVocab()
	tj, err := tokjson.FromGGUFMetadata(v.KVs("gpt2"))
	if err != nil {
		t.Fatal(err)
	}
	edit := func(f func(m map[string]any)) []byte {
		var m map[string]any
		json.Unmarshal(tj, &m)
		f(m)
		b, _ := json.Marshal(m)
		return b
	}
	for name, data := range map[string][]byte{
		"wordpiece":   edit(func(m map[string]any) { m["model"].(map[string]any)["type"] = "WordPiece" }),
		"unknown pre": edit(func(m map[string]any) { m["pre_tokenizer"] = map[string]any{"type": "Whitespace"} }),
	} {
		if _, err := tokjson.ToGGUFMetadata(data, nil); !errors.Is(err, tokjson.ErrUnsupported) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := tokjson.ToGGUFMetadata([]byte("{"), nil); err == nil {
		t.Error("bad JSON accepted")
	}
	// Merges as "a b" strings (older tokenizers; tokjson writes pairs) and a
	// hole in the ids.
	pairs := edit(func(m map[string]any) {
		model := m["model"].(map[string]any)
		var ss []string
		for _, p := range model["merges"].([]any) {
			x := p.([]any)
			ss = append(ss, x[0].(string)+" "+x[1].(string))
		}
		model["merges"] = ss
		model["vocab"].(map[string]any)["zzz"] = 400
	})
	back, err := tokjson.ToGGUFMetadata(pairs, nil)
	if err != nil {
		t.Fatal(err)
	}
	toks, _ := kvMap(back)["tokenizer.ggml.tokens"].Strings()
	if len(toks) != 401 || toks[399] != "[PAD399]" || toks[400] != "zzz" {
		t.Errorf("%d tokens, [399] %q", len(toks), toks[399])
	}
	if ms, _ := kvMap(back)["tokenizer.ggml.merges"].Strings(); len(ms) != len(v.Merges) || ms[0] != v.Merges[0] {
		t.Errorf("merges %v", ms)
	}
}
