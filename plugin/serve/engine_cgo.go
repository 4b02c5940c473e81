//go:build cgo

package serve

import (
	"context"
	"errors"
	"fmt"

	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/plugin/chat"
	"github.com/nwc-project/nwc/plugin/llama"
	"github.com/nwc-project/nwc/plugin/tokenizer"
)

// Tokenizer is what LlamaEngine needs of a tokenizer (plugin/tokenizer's
// Tokenizer; tests use others).
type Tokenizer interface {
	Encode(text string) ([]int32, error)
	Decode(ids []int32) (string, error)
}

// LlamaEngine is the Engine of a plugin/llama Decoder: each generation
// runs Decoder.Generate with a cache of its own.
type LlamaEngine struct {
	dec    *llama.Decoder
	tok    Tokenizer
	tmpl   *chat.Template // nil: no chat template
	stops  []int32
	closer func() error
}

// NewLlamaEngine serves dec with tok; tmpl (nil: none, chat requests get
// 400) renders conversations; stops are the end-of-sequence ids.
func NewLlamaEngine(dec *llama.Decoder, tok Tokenizer, tmpl *chat.Template, stops []int32) *LlamaEngine {
	return &LlamaEngine{dec: dec, tok: tok, tmpl: tmpl, stops: stops}
}

// OpenLlamaEngine builds the engine of a model source: its tokenizer,
// chat template (when it has one), stop tokens and a Decoder. src may be
// closed once it returns; Close frees the rest.
func OpenLlamaEngine(src tensor.Source, opts llama.Options) (*LlamaEngine, error) {
	tok, err := tokenizer.ForSource(src)
	if err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	tmpl, err := chat.FromSource(src)
	if err != nil && !errors.Is(err, chat.ErrNoTemplate) {
		tok.Close()
		return nil, fmt.Errorf("serve: %w", err)
	}
	stops, err := chat.StopTokens(src)
	if err != nil {
		tok.Close()
		return nil, fmt.Errorf("serve: %w", err)
	}
	dec, err := llama.OpenDecoderSource(src, opts)
	if err != nil {
		tok.Close()
		return nil, fmt.Errorf("serve: %w", err)
	}
	e := NewLlamaEngine(dec, tok, tmpl, stops)
	e.closer = func() error { return errors.Join(dec.Close(), tok.Close()) }
	return e, nil
}

// Decoder returns the engine's decoder.
func (e *LlamaEngine) Decoder() *llama.Decoder { return e.dec }

// Close frees what OpenLlamaEngine opened (nothing for NewLlamaEngine).
func (e *LlamaEngine) Close() error {
	if e.closer == nil {
		return nil
	}
	return e.closer()
}

// Encode implements Engine.
func (e *LlamaEngine) Encode(text string) ([]int32, error) { return e.tok.Encode(text) }

// RenderChat implements Engine.
func (e *LlamaEngine) RenderChat(msgs []chat.Message) (string, error) {
	if e.tmpl == nil {
		return "", chat.ErrNoTemplate
	}
	return e.tmpl.Render(msgs, true)
}

// ContextLength implements Engine: the model's trained context.
func (e *LlamaEngine) ContextLength() int { return e.dec.Config().ContextLen }

// Vocab implements Engine.
func (e *LlamaEngine) Vocab() int { return e.dec.Vocab() }

// Generate implements Engine with Decoder.Generate.
func (e *LlamaEngine) Generate(ctx context.Context, prompt []int32, p Params, onText func(string) error) (Output, error) {
	opts := llama.GenerateOptions{
		MaxTokens:   p.MaxTokens,
		Sampling:    llama.Sampling{Temperature: p.Temperature, TopP: p.TopP, Seed: p.Seed},
		StopTokens:  e.stops,
		StopStrings: p.Stop,
		Detokenize:  e.tok.Decode,
	}
	if onText != nil {
		opts.OnToken = func(t llama.Token) error { return onText(t.Text) }
	}
	res, err := e.dec.Generate(ctx, prompt, opts)
	if res == nil {
		return Output{}, err
	}
	return Output{Text: res.Text, CompletionTokens: len(res.Tokens), FinishReason: res.StopReason}, err
}
