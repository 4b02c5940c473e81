package eval

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// Config is what `nwc eval` asks for (see Evaluate).
type Config struct {
	// Model and Reference name the models in the report (paths or
	// reference names); they are not opened here.
	Model, Reference string
	// TextPath is the text to evaluate on ("" = the carried WikiText-2 test
	// text). Its rows are joined with "\n\n" (LoadText).
	TextPath string
	Options
}

// Report is the outcome of Evaluate: the Result plus what was evaluated.
type Report struct {
	Model     string `json:"model"`
	Reference string `json:"reference,omitempty"`
	Text      string `json:"text"`
	// TextSHA256 of the text file; TextVerified: it matched the known
	// sha256 of a carried text.
	TextSHA256   string `json:"text_sha256"`
	TextVerified bool   `json:"text_verified"`
	// TextBytes of the joined text that was tokenized; TokenizeSeconds to
	// tokenize it.
	TextBytes       int     `json:"text_bytes"`
	TokenizeSeconds float64 `json:"tokenize_seconds"`
	Result
}

// Evaluate loads the text, tokenizes it once with tok, and runs lm (and ref,
// when not nil) over it: the whole of `nwc eval` but opening the models.
//
// A command-line front end needs only this:
//
//	src, _, err := loader.Open(modelName)            // tensor.Source
//	tok, err := tokenizer.ForSource(src)              // plugin/tokenizer
//	lm := <runtime>(src)                              // satisfies eval.LM
//	rep, err := eval.Evaluate(ctx, lm, refLM, tok, eval.Config{
//		Model: modelName, TextPath: textFlag,
//		Options: eval.Options{SeqLen: seqLen, MaxWindows: k, Progress: ...}})
//	rep.WriteText(os.Stdout)  // or JSON-encode rep
//
// The reference model must use the same tokenizer (the same vocabulary).
// On a cancelled ctx the partial report is returned with ctx.Err().
func Evaluate(ctx context.Context, lm, ref LM, tok Tokenizer, cfg Config) (Report, error) {
	if tok == nil {
		return Report{}, errors.New("eval: no tokenizer")
	}
	text, err := LoadText(cfg.TextPath)
	if err != nil {
		return Report{}, err
	}
	rep := Report{
		Model: cfg.Model, Reference: cfg.Reference,
		Text: text.Source, TextSHA256: text.SHA256, TextVerified: text.Verified,
		TextBytes: len(text.Joined),
	}
	if ref == nil {
		rep.Reference = ""
	}
	t0 := time.Now()
	ids, err := tok.Encode(text.Joined)
	if err != nil {
		return rep, fmt.Errorf("eval: tokenizing %s: %w", text.Source, err)
	}
	rep.TokenizeSeconds = time.Since(t0).Seconds()
	rep.Result, err = Run(ctx, lm, ref, ids, cfg.Options)
	return rep, err
}

// WriteText writes the report for people.
func (r Report) WriteText(w io.Writer) error {
	ew := &errWriter{w: w}
	ew.printf("model:           %s\n", r.Model)
	if r.Reference != "" {
		ew.printf("reference:       %s\n", r.Reference)
	}
	verified := ""
	if r.TextVerified {
		verified = ", sha256 verified"
	}
	ew.printf("text:            %s (%d bytes joined%s)\n", r.Text, r.TextBytes, verified)
	ew.printf("tokens:          %d in the text; %d windows of %d used (%d tokens), %d scored\n",
		r.TextTokens, r.Windows, r.SeqLen, r.TokensUsed, r.TokensScored)
	ew.printf("perplexity:      %.4f\n", r.Perplexity)
	ew.printf("mean NLL:        %.6f nats/token\n", r.MeanNLL)
	if r.MeanKL != nil {
		ew.printf("mean KL:         %.6g nats/token (max %.4g), top-1 agreement %.4f\n", *r.MeanKL, *r.MaxKL, *r.Top1Agreement)
	}
	ew.printf("speed:           %.1f tokens/s (%.1f s; model %.1f s; tokenizing %.2f s)\n",
		r.TokensPerSecond, r.Seconds, r.ModelSeconds, r.TokenizeSeconds)
	return ew.err
}

type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) printf(format string, args ...any) {
	if e.err == nil {
		_, e.err = fmt.Fprintf(e.w, format, args...)
	}
}
