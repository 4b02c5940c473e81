package tokjson

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/nwc-project/nwc/loader/gguf"
)

// knownPre lists the tokenizer.ggml.pre names ToGGUFMetadata recognises a
// pre-tokenizer as, in order of preference.
var knownPre = []string{"gpt2", "smollm", "llama-bpe"}

// canonicalJSON re-encodes a JSON value with sorted keys.
func canonicalJSON(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	var x any
	if err := json.Unmarshal(b, &x); err != nil {
		return "", err
	}
	b, err = json.Marshal(x)
	return string(b), err
}

// tokenText is a special token in tokenizer_config.json: a string or an
// AddedToken object with "content".
func tokenText(v any) string {
	switch t := v.(type) {
	case string:
		return t
	case map[string]any:
		s, _ := t["content"].(string)
		return s
	}
	return ""
}

// ToGGUFMetadata is the inverse of FromGGUFMetadata: the tokenizer.* GGUF
// keys (tokenizer.ggml.model "gpt2", pre, tokens, token_type, merges,
// special token ids, add_bos/add_eos, chat_template) for a Hugging Face
// byte-level BPE tokenizer.json whose pre-tokenizer is one llama.cpp knows
// by name (gpt2, smollm, llama-bpe). tokConfig (tokenizer_config.json, may
// be nil) gives the special tokens and the chat template.
func ToGGUFMetadata(tokJSON, tokConfig []byte) ([]gguf.KV, error) {
	var tj struct {
		AddedTokens []struct {
			ID      int    `json:"id"`
			Content string `json:"content"`
			Special bool   `json:"special"`
		} `json:"added_tokens"`
		PreTokenizer  any `json:"pre_tokenizer"`
		PostProcessor any `json:"post_processor"`
		Model         struct {
			Type   string          `json:"type"`
			Vocab  map[string]int  `json:"vocab"`
			Merges json.RawMessage `json:"merges"`
		} `json:"model"`
	}
	if err := json.Unmarshal(tokJSON, &tj); err != nil {
		return nil, fmt.Errorf("tokenizer: tokenizer.json: %w", err)
	}
	if tj.Model.Type != "BPE" {
		return nil, fmt.Errorf("%w: tokenizer.json model %q (only byte-level BPE converts to GGUF)", ErrUnsupported, tj.Model.Type)
	}
	got, err := canonicalJSON(tj.PreTokenizer)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: tokenizer.json pre_tokenizer: %w", err)
	}
	pre := ""
	for _, name := range knownPre {
		pt, _ := preTokenizerFor(name)
		if want, _ := canonicalJSON(pt.preTokenizer); want == got {
			pre = name
			break
		}
	}
	if pre == "" {
		return nil, fmt.Errorf("%w: tokenizer.json pre_tokenizer %s matches none llama.cpp knows by name (%s)", ErrUnsupported, got, strings.Join(knownPre, ", "))
	}
	// Tokens in id order: the vocabulary plus the added tokens.
	n := 0
	for _, id := range tj.Model.Vocab {
		n = max(n, id+1)
	}
	for _, a := range tj.AddedTokens {
		n = max(n, a.ID+1)
	}
	if n == 0 || n > 1<<24 {
		return nil, fmt.Errorf("tokenizer: tokenizer.json vocabulary of %d tokens", n)
	}
	tokens := make([]string, n)
	types := make([]int32, n)
	for tok, id := range tj.Model.Vocab {
		if id < 0 {
			return nil, fmt.Errorf("tokenizer: tokenizer.json token %q has id %d", tok, id)
		}
		tokens[id], types[id] = tok, TokenTypeNormal
	}
	for _, a := range tj.AddedTokens {
		if a.ID < 0 {
			return nil, fmt.Errorf("tokenizer: tokenizer.json added token %q has id %d", a.Content, a.ID)
		}
		tokens[a.ID], types[a.ID] = a.Content, TokenTypeUserDefined
		if a.Special {
			types[a.ID] = TokenTypeControl
		}
	}
	for id := range tokens {
		if types[id] == 0 { // a hole, as llama.cpp's converter fills it
			tokens[id], types[id] = fmt.Sprintf("[PAD%d]", id), TokenTypeUnused
		}
	}
	var merges []string
	var asStrings []string
	var asPairs [][2]string
	if err := json.Unmarshal(tj.Model.Merges, &asStrings); err == nil {
		merges = asStrings
	} else if err := json.Unmarshal(tj.Model.Merges, &asPairs); err == nil {
		for _, p := range asPairs {
			merges = append(merges, p[0]+" "+p[1])
		}
	} else {
		return nil, fmt.Errorf("tokenizer: tokenizer.json merges are neither strings nor pairs: %w", err)
	}
	index := make(map[string]int32, n)
	for id, t := range tokens {
		if _, dup := index[t]; !dup {
			index[t] = int32(id)
		}
	}
	var cfg map[string]any
	if tokConfig != nil {
		if err := json.Unmarshal(tokConfig, &cfg); err != nil {
			return nil, fmt.Errorf("tokenizer: tokenizer_config.json: %w", err)
		}
	}
	str := func(v string) gguf.Value { return gguf.Value{Type: gguf.ValueString, V: v} }
	kvs := []gguf.KV{
		{Key: "tokenizer.ggml.model", Value: str("gpt2")},
		{Key: "tokenizer.ggml.pre", Value: str(pre)},
		{Key: "tokenizer.ggml.tokens", Value: gguf.Value{Type: gguf.ValueArray, Elem: gguf.ValueString, V: tokens}},
		{Key: "tokenizer.ggml.token_type", Value: gguf.Value{Type: gguf.ValueArray, Elem: gguf.ValueInt32, V: types}},
		{Key: "tokenizer.ggml.merges", Value: gguf.Value{Type: gguf.ValueArray, Elem: gguf.ValueString, V: merges}},
	}
	ids := map[string]int32{}
	for _, k := range []string{"bos", "eos", "unk", "pad"} {
		if id, ok := index[tokenText(cfg[k+"_token"])]; ok && tokenText(cfg[k+"_token"]) != "" {
			ids[k] = id
		}
	}
	names := map[string]string{"bos": "bos_token_id", "eos": "eos_token_id", "unk": "unknown_token_id", "pad": "padding_token_id"}
	for _, k := range []string{"bos", "eos", "unk", "pad"} {
		if id, ok := ids[k]; ok {
			kvs = append(kvs, gguf.KV{Key: "tokenizer.ggml." + names[k], Value: gguf.Value{Type: gguf.ValueUint32, V: uint32(id)}})
		}
	}
	// BOS / EOS added: what the post-processor's template does.
	addBOS, addEOS := false, false
	if pp, err := canonicalJSON(tj.PostProcessor); err == nil && strings.Contains(pp, "TemplateProcessing") {
		var single []string
		collectSingle(tj.PostProcessor, &single)
		if len(single) > 0 {
			addBOS = single[0] != "A"
			addEOS = single[len(single)-1] != "A"
		}
	}
	kvs = append(kvs,
		gguf.KV{Key: "tokenizer.ggml.add_bos_token", Value: gguf.Value{Type: gguf.ValueBool, V: addBOS}},
		gguf.KV{Key: "tokenizer.ggml.add_eos_token", Value: gguf.Value{Type: gguf.ValueBool, V: addEOS}})
	if ct, ok := cfg["chat_template"].(string); ok && ct != "" {
		kvs = append(kvs, gguf.KV{Key: "tokenizer.chat_template", Value: str(ct)})
	}
	return kvs, nil
}

// collectSingle finds the "single" template of a TemplateProcessing
// post-processor (possibly inside a Sequence) and lists its pieces: "A" for
// the sequence, the token id string for a special token.
func collectSingle(v any, out *[]string) {
	m, ok := v.(map[string]any)
	if !ok {
		return
	}
	if m["type"] == "TemplateProcessing" {
		items, _ := m["single"].([]any)
		for _, it := range items {
			im, _ := it.(map[string]any)
			if s, ok := im["Sequence"].(map[string]any); ok {
				id, _ := s["id"].(string)
				*out = append(*out, id)
			} else if s, ok := im["SpecialToken"].(map[string]any); ok {
				id, _ := s["id"].(string)
				*out = append(*out, "special:"+id)
			}
		}
		return
	}
	procs, _ := m["processors"].([]any)
	for _, p := range procs {
		collectSingle(p, out)
	}
}
