//go:build cgo

package llama

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Sampling chooses the next token from a row of logits.
type Sampling struct {
	// Temperature <= 0 is greedy decoding (argmax, the lowest id on ties);
	// otherwise the logits are divided by it before top-k, top-p and the
	// draw.
	Temperature float64
	// TopK keeps the K most likely tokens (<= 0: all).
	TopK int
	// TopP keeps the smallest set of most likely tokens whose probability
	// reaches P (<= 0 or >= 1: all).
	TopP float64
	// Seed seeds the draw: the same seed, prompt and options give the same
	// tokens.
	Seed uint64
}

// Sampler draws tokens by Sampling; it is not safe for concurrent use.
type Sampler struct {
	s   Sampling
	rng *rand.Rand
	idx []int
	p   []float64
}

// NewSampler returns a sampler for s.
func NewSampler(s Sampling) *Sampler {
	return &Sampler{s: s, rng: rand.New(rand.NewPCG(s.Seed, 0x6e7763))}
}

// Next returns the token drawn from logits (one row of Vocab() values).
func (s *Sampler) Next(logits []float32) int32 {
	if s.s.Temperature <= 0 || len(logits) == 1 {
		return argmax(logits)
	}
	// Candidates by descending logit (stable: ties keep id order).
	s.idx = s.idx[:0]
	for i := range logits {
		s.idx = append(s.idx, i)
	}
	slices.SortStableFunc(s.idx, func(a, b int) int {
		switch {
		case logits[a] > logits[b]:
			return -1
		case logits[a] < logits[b]:
			return 1
		}
		return 0
	})
	n := len(s.idx)
	if k := s.s.TopK; k > 0 && k < n {
		n = k
	}
	// Softmax of logit/T over the candidates, in float64.
	s.p = s.p[:0]
	top := float64(logits[s.idx[0]]) / s.s.Temperature
	sum := 0.0
	for _, i := range s.idx[:n] {
		e := math.Exp(float64(logits[i])/s.s.Temperature - top)
		s.p = append(s.p, e)
		sum += e
	}
	if p := s.s.TopP; p > 0 && p < 1 {
		cum := 0.0
		for j, e := range s.p {
			cum += e / sum
			if cum >= p {
				n = j + 1
				break
			}
		}
		sum = 0
		for _, e := range s.p[:n] {
			sum += e
		}
	}
	r := s.rng.Float64() * sum
	for j, e := range s.p[:n] {
		r -= e
		if r < 0 {
			return int32(s.idx[j])
		}
	}
	return int32(s.idx[n-1])
}

func argmax(row []float32) int32 {
	best := 0
	for i, v := range row {
		if v > row[best] {
			best = i
		}
	}
	return int32(best)
}

// GenerateOptions configure Decoder.Generate.
type GenerateOptions struct {
	// MaxTokens bounds the generated tokens (<= 0: 256).
	MaxTokens int
	Sampling  Sampling
	// StopTokens end the generation (the end-of-sequence ids, typically);
	// the stop token is not part of the result.
	StopTokens []int32
	// StopStrings end the generation when the text contains one; the text
	// is cut before it. They need Detokenize.
	StopStrings []string
	// Detokenize turns token ids into text (a tokenizer's Decode). Without
	// it Result.Text and Token.Text stay empty.
	Detokenize func(ids []int32) (string, error)
	// OnToken, when set, receives every generated token as it comes, with
	// the text it adds (text that could start a stop string, or an
	// incomplete UTF-8 sequence, is held back until it is settled). An
	// error from it ends the generation and is returned.
	OnToken func(Token) error
}

// Token is one generated token.
type Token struct {
	ID   int32
	Text string // the text this token adds to the output (may be empty)
}

// Stop reasons in Result.
const (
	StopMaxTokens = "length" // MaxTokens reached
	StopToken     = "stop"   // a stop token or stop string
)

// Result is what Generate produced.
type Result struct {
	Tokens     []int32 // generated ids (a stop token excluded)
	Text       string  // their text, cut before a stop string
	StopReason string  // StopMaxTokens or StopToken
	// PromptTokens, Prefill, DecodeSteps and Decode: prompt length, the
	// prompt's forward pass, and the one-token steps after it (decode
	// tokens/s = DecodeSteps / Decode).
	PromptTokens int
	Prefill      time.Duration
	DecodeSteps  int
	Decode       time.Duration
}

// Generate runs prompt through a fresh cache and then generates tokens one
// at a time until a stop token, a stop string or MaxTokens. ctx is checked
// between steps and cancels a step in progress; on cancellation Generate
// returns what it has so far with an error wrapping ctx.Err().
func (d *Decoder) Generate(ctx context.Context, prompt []int32, opts GenerateOptions) (*Result, error) {
	if len(prompt) == 0 {
		return nil, errors.New("llama: empty prompt")
	}
	if len(opts.StopStrings) > 0 && opts.Detokenize == nil {
		return nil, errors.New("llama: stop strings need GenerateOptions.Detokenize")
	}
	for _, s := range opts.StopStrings {
		if s == "" {
			return nil, errors.New("llama: empty stop string")
		}
	}
	maxTok := opts.MaxTokens
	if maxTok <= 0 {
		maxTok = 256
	}
	cache := d.NewCache()
	defer cache.Close()
	res := &Result{PromptTokens: len(prompt), StopReason: StopMaxTokens}
	sampler := NewSampler(opts.Sampling)
	st := streamer{opts: opts}

	start := time.Now()
	logits, err := cache.Forward(ctx, prompt)
	if err != nil {
		return nil, fmt.Errorf("llama: prefill: %w", err)
	}
	res.Prefill = time.Since(start)
	V := d.cfg.Vocab
	last := logits[len(logits)-V:]
	start = time.Now()
	finish := func(err error) (*Result, error) {
		res.Decode = time.Since(start)
		if ferr := st.flush(res); ferr != nil && err == nil {
			err = ferr
		}
		return res, err
	}
	for len(res.Tokens) < maxTok {
		tok := sampler.Next(last)
		if slices.Contains(opts.StopTokens, tok) {
			res.StopReason = StopToken
			break
		}
		res.Tokens = append(res.Tokens, tok)
		stop, err := st.push(res, tok)
		if err != nil {
			return finish(err)
		}
		if stop {
			res.StopReason = StopToken
			break
		}
		if len(res.Tokens) == maxTok {
			break
		}
		if err := ctx.Err(); err != nil {
			return finish(fmt.Errorf("llama: generation cancelled: %w", err))
		}
		if last, err = cache.Forward(ctx, []int32{tok}); err != nil {
			return finish(err)
		}
		res.DecodeSteps++
	}
	return finish(nil)
}

// streamer turns tokens into text as they come: it decodes all generated
// ids each step (so multi-token characters come out whole) and holds back
// text that could still become a stop string.
type streamer struct {
	opts    GenerateOptions
	text    string // decoded text of the tokens so far (cut at a stop string)
	emitted int    // bytes of text handed to OnToken
	stopped bool
}

// push adds tok (already appended to res.Tokens); it reports whether a stop
// string ended the generation.
func (s *streamer) push(res *Result, tok int32) (bool, error) {
	if s.opts.Detokenize == nil {
		if s.opts.OnToken != nil {
			return false, s.opts.OnToken(Token{ID: tok})
		}
		return false, nil
	}
	text, err := s.opts.Detokenize(res.Tokens)
	if err != nil {
		return false, fmt.Errorf("llama: detokenize: %w", err)
	}
	s.text = text
	safe := len(text)
	for _, stop := range s.opts.StopStrings {
		if i := strings.Index(text, stop); i >= 0 && i < safe {
			safe, s.stopped = i, true
		}
	}
	if s.stopped {
		s.text = text[:safe]
	} else {
		// Hold back an incomplete character and a possible stop-string start.
		for strings.HasSuffix(text[:safe], "\uFFFD") {
			safe -= len("\uFFFD")
		}
		hold := 0
		for _, stop := range s.opts.StopStrings {
			for k := min(len(stop)-1, safe); k > hold; k-- {
				if strings.HasSuffix(text[:safe], stop[:k]) {
					hold = k
					break
				}
			}
		}
		safe -= hold
	}
	// Never split a character.
	for safe > s.emitted && safe < len(text) && !utf8.RuneStart(text[safe]) {
		safe--
	}
	res.Text = s.text
	out := ""
	if safe > s.emitted {
		out = text[s.emitted:safe]
		s.emitted = safe
	}
	if s.opts.OnToken != nil {
		if err := s.opts.OnToken(Token{ID: tok, Text: out}); err != nil {
			return s.stopped, err
		}
	}
	return s.stopped, nil
}

// flush hands the held-back text to OnToken (as a Token with ID -1) once
// the generation is over.
func (s *streamer) flush(res *Result) error {
	res.Text = s.text
	if s.opts.OnToken == nil || s.emitted >= len(s.text) {
		return nil
	}
	out := s.text[s.emitted:]
	s.emitted = len(s.text)
	return s.opts.OnToken(Token{ID: -1, Text: out})
}
