// Package chat renders a model's chat template: the Jinja template a GGUF
// file carries as tokenizer.chat_template, or a Hugging Face
// tokenizer_config.json's chat_template, applied in Go with
// github.com/ardanlabs/jinja (pure Go, written for LLM chat templates, with
// Hugging Face's trim_blocks/lstrip_blocks settings built in). It also finds
// a model's end-of-sequence token ids, the stop tokens of generation.
//
// scripts/check-chat-template.py checks the rendering against Python's
// jinja2 configured as transformers configures it; its output is the test
// data of this package's tests.
package chat

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/ardanlabs/jinja"

	"github.com/nwc-project/nwc/loader/gguf"
	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/loader/tokjson"
)

// ErrNoTemplate: the model carries no chat template.
var ErrNoTemplate = errors.New("chat: the model has no chat template")

// Message is one turn of a conversation.
type Message struct {
	Role    string `json:"role"` // "system", "user", "assistant"
	Content string `json:"content"`
}

// Template is a compiled chat template; it is safe for concurrent use.
type Template struct {
	// Source is the Jinja text.
	Source string
	// BOS and EOS are the bos_token and eos_token strings the template sees.
	BOS, EOS string
	t        *jinja.Template
}

// New compiles the Jinja template source; bos and eos are the values of
// bos_token and eos_token in it.
func New(source, bos, eos string) (*Template, error) {
	t, err := jinja.Compile(source)
	if err != nil {
		return nil, fmt.Errorf("chat: compile template: %w", err)
	}
	return &Template{Source: source, BOS: bos, EOS: eos, t: t}, nil
}

// Render renders msgs; addGenerationPrompt appends the assistant turn's
// opening as transformers' apply_chat_template(add_generation_prompt=True)
// does.
func (t *Template) Render(msgs []Message, addGenerationPrompt bool) (string, error) {
	list := make([]any, len(msgs))
	for i, m := range msgs {
		list[i] = map[string]any{"role": m.Role, "content": m.Content}
	}
	out, err := t.t.Render(map[string]any{
		"messages":              list,
		"add_generation_prompt": addGenerationPrompt,
		"bos_token":             t.BOS,
		"eos_token":             t.EOS,
	})
	if err != nil {
		return "", fmt.Errorf("chat: render template: %w", err)
	}
	return out, nil
}

// FromGGUF returns the template of GGUF metadata: tokenizer.chat_template,
// with bos_token/eos_token the tokens of tokenizer.ggml.bos/eos_token_id.
func FromGGUF(kvs []gguf.KV) (*Template, error) {
	var src string
	var tokens []string
	var bosID, eosID int64 = -1, -1
	for _, kv := range kvs {
		switch kv.Key {
		case "tokenizer.chat_template":
			s, ok := kv.Value.Str()
			if !ok {
				return nil, fmt.Errorf("chat: GGUF tokenizer.chat_template is not a string: %w", tensor.ErrCorrupt)
			}
			src = s
		case "tokenizer.ggml.tokens":
			tokens, _ = kv.Value.Strings()
		case "tokenizer.ggml.bos_token_id":
			if v, ok := kv.Value.Int(); ok {
				bosID = v
			}
		case "tokenizer.ggml.eos_token_id":
			if v, ok := kv.Value.Int(); ok {
				eosID = v
			}
		}
	}
	if src == "" {
		return nil, ErrNoTemplate
	}
	tok := func(id int64) string {
		if id >= 0 && id < int64(len(tokens)) {
			return tokens[id]
		}
		return ""
	}
	return New(src, tok(bosID), tok(eosID))
}

// FromTokenizerConfig returns the template of a Hugging Face
// tokenizer_config.json: chat_template as a string, or the entry named
// "default" of a list of {name, template}.
func FromTokenizerConfig(data []byte) (*Template, error) {
	var cfg struct {
		ChatTemplate json.RawMessage `json:"chat_template"`
		BOS          json.RawMessage `json:"bos_token"`
		EOS          json.RawMessage `json:"eos_token"`
	}
	if err := json.Unmarshal(data, &cfg); err != nil {
		return nil, fmt.Errorf("chat: tokenizer_config.json: %w", err)
	}
	if len(cfg.ChatTemplate) == 0 || string(cfg.ChatTemplate) == "null" {
		return nil, ErrNoTemplate
	}
	var src string
	if err := json.Unmarshal(cfg.ChatTemplate, &src); err != nil {
		var named []struct{ Name, Template string }
		if err2 := json.Unmarshal(cfg.ChatTemplate, &named); err2 != nil {
			return nil, fmt.Errorf("chat: tokenizer_config.json chat_template is neither a string nor a list of templates: %w", err)
		}
		for _, n := range named {
			if n.Name == "default" {
				src = n.Template
			}
		}
		if src == "" {
			return nil, ErrNoTemplate
		}
	}
	return New(src, specialString(cfg.BOS), specialString(cfg.EOS))
}

// specialString reads a tokenizer_config.json special token: a string or an
// AddedToken object {"content": ...}.
func specialString(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var o struct{ Content string }
	if json.Unmarshal(raw, &o) == nil {
		return o.Content
	}
	return ""
}

// Asset names read by FromSource and StopTokens.
const (
	TokenizerConfigAsset  = "tokenizer_config.json"
	GenerationConfigAsset = "generation_config.json"
	configAsset           = "config.json"
)

// FromSource returns the chat template of a model source: its GGUF metadata
// (GGUF files and .nwc files made from them), else its
// tokenizer_config.json asset. The error wraps ErrNoTemplate when it has
// neither.
func FromSource(src tensor.Source) (*Template, error) {
	for _, a := range src.Assets() {
		if a.Name == gguf.MetadataAsset {
			kvs, err := gguf.ParseMetadataJSON(a.Data)
			if err != nil {
				return nil, fmt.Errorf("chat: %w", err)
			}
			return FromGGUF(kvs)
		}
	}
	for _, a := range src.Assets() {
		if a.Name == TokenizerConfigAsset {
			return FromTokenizerConfig(a.Data)
		}
	}
	return nil, ErrNoTemplate
}

// StopTokens returns the model's end-of-sequence token ids: GGUF
// tokenizer.ggml.eos_token_id, else generation_config.json's or
// config.json's eos_token_id (a number or a list). None is not an error.
func StopTokens(src tensor.Source) ([]int32, error) {
	assets := map[string][]byte{}
	for _, a := range src.Assets() {
		assets[a.Name] = a.Data
	}
	if meta, ok := assets[gguf.MetadataAsset]; ok {
		kvs, err := gguf.ParseMetadataJSON(meta)
		if err != nil {
			return nil, fmt.Errorf("chat: %w", err)
		}
		s, err := tokjson.SpecialTokens(kvs)
		if err != nil {
			return nil, fmt.Errorf("chat: %w", err)
		}
		if s.EOS >= 0 {
			return []int32{s.EOS}, nil
		}
		return nil, nil
	}
	var ids []int32
	for _, name := range []string{GenerationConfigAsset, configAsset} {
		data, ok := assets[name]
		if !ok {
			continue
		}
		var c struct {
			EOS json.RawMessage `json:"eos_token_id"`
		}
		if err := json.Unmarshal(data, &c); err != nil {
			return nil, fmt.Errorf("chat: %s: %w", name, err)
		}
		var one int32
		var many []int32
		switch {
		case len(c.EOS) == 0 || string(c.EOS) == "null":
			continue
		case json.Unmarshal(c.EOS, &one) == nil:
			many = []int32{one}
		case json.Unmarshal(c.EOS, &many) == nil:
		default:
			return nil, fmt.Errorf("chat: %s: eos_token_id %s is neither a number nor a list", name, c.EOS)
		}
		for _, id := range many {
			if !slices.Contains(ids, id) {
				ids = append(ids, id)
			}
		}
		return ids, nil
	}
	return nil, nil
}
