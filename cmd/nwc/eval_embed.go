//go:build cgo

package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/nwc-project/nwc/eval/embed"
	"github.com/nwc-project/nwc/loader"
	"github.com/nwc-project/nwc/plugin/bert"
)

// Evaluation modes (nwc eval --mode).
const (
	modeAuto  = ""      // embed for a BERT encoder, lm otherwise
	modeLM    = "lm"    // perplexity / KL
	modeEmbed = "embed" // sentence-embedding fidelity
)

// embedEvalJSON is what `nwc eval --mode embed --json` prints.
type embedEvalJSON struct {
	Model          string  `json:"model"`
	Reference      string  `json:"reference"`
	SentenceRule   string  `json:"sentence_rule"`
	Provider       string  `json:"provider"`
	LoadSeconds    float64 `json:"load_seconds"`
	FileBytes      int64   `json:"file_bytes,omitempty"`
	LinearBitsPerW float64 `json:"linear_bits_per_weight,omitempty"`
	embed.Result
}

// openEncoder opens a sentence encoder (decoding a .nwc with lf's
// provider); it returns the load time.
func openEncoder(nameOrPath string, lf lmFlags) (*bert.Model, float64, error) {
	start := time.Now()
	src, _, err := loader.Open(nameOrPath, lf.env())
	if err != nil {
		return nil, 0, err
	}
	defer src.Close()
	m, err := bert.OpenSource(src, bert.Options{Provider: lf.provider, Threads: lf.threads,
		Logf: func(format string, args ...any) { fmt.Fprintf(os.Stderr, "nwc: "+format+"\n", args...) }})
	if err != nil {
		return nil, 0, err
	}
	return m, time.Since(start).Seconds(), nil
}

// runEvalEmbed compares the sentence embeddings of model with those of ref
// on n sentences of the carried WikiText-2 test text (eval/embed).
func runEvalEmbed(ctx context.Context, model, ref string, n, k int, asJSON bool, lf lmFlags) error {
	if ref == "" {
		return fmt.Errorf("eval --mode embed: --reference is needed (the uncompressed encoder, e.g. minilm-l6)")
	}
	out := embedEvalJSON{Model: model, Reference: ref, SentenceRule: embed.SentenceRule}
	src, _, err := loader.Open(model, lf.env())
	if err != nil {
		return err
	}
	if nf, ok := src.(*loader.NWCFile); ok {
		out.FileBytes = nf.Container().Size()
		out.LinearBitsPerW = loader.LinearBitsPerWeight(nf.Container())
	}
	src.Close()
	sentences, err := embed.Sentences(n)
	if err != nil {
		return err
	}
	m, secs, err := openEncoder(model, lf)
	if err != nil {
		return err
	}
	defer m.Close()
	out.LoadSeconds, out.Provider = secs, m.Provider()
	r, _, err := openEncoder(ref, lf)
	if err != nil {
		return err
	}
	defer r.Close()
	if m.Config().Hidden != r.Config().Hidden {
		return fmt.Errorf("eval: the model's embeddings have %d dimensions, the reference's %d", m.Config().Hidden, r.Config().Hidden)
	}
	res, err := embed.Evaluate(ctx, m, r, sentences, k)
	if err != nil {
		return err
	}
	out.Result = res
	if asJSON {
		return writeJSON(os.Stdout, out)
	}
	fmt.Printf("model:           %s\nreference:       %s\n", model, ref)
	fmt.Printf("sentences:       %d (WikiText-2 test, eval/embed rule)\n", res.Sentences)
	fmt.Printf("cosine:          mean %.6f, p1 %.6f, min %.6f\n", res.MeanCosine, res.P1Cosine, res.MinCosine)
	fmt.Printf("top-%d agreement: %.4f\n", res.TopK, res.TopKAgreement)
	fmt.Printf("load:            %.1f s (%s)\n", out.LoadSeconds, out.Provider)
	if out.FileBytes > 0 {
		fmt.Printf("file:            %d bytes; linear weights at %.3f bits/weight\n", out.FileBytes, out.LinearBitsPerW)
	}
	return nil
}
