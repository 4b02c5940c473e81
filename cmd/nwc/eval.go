//go:build cgo

package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/nwc-project/nwc/eval"
	"github.com/nwc-project/nwc/eval/embed"
	"github.com/nwc-project/nwc/loader"
	"github.com/nwc-project/nwc/plugin/bert"
	"github.com/nwc-project/nwc/plugin/llama"
	"github.com/nwc-project/nwc/plugin/tokenizer"
)

// evalJSON is what `nwc eval --json` prints: the eval report plus how long
// opening (and, for .nwc files, decoding) the model took.
type evalJSON struct {
	eval.Report
	Provider          string  `json:"provider"`
	LoadSeconds       float64 `json:"load_seconds"`
	FileBytes         int64   `json:"file_bytes,omitempty"`
	LinearBitsPerW    float64 `json:"linear_bits_per_weight,omitempty"`
	ReferenceLoadSecs float64 `json:"reference_load_seconds,omitempty"`
	// WeightsSHA256 (--digest): digest of the weights the runtime was built
	// with (digest.go); compare with nwc inspect --digest.
	WeightsSHA256 string `json:"weights_sha256,omitempty"`
	WeightsHashed int    `json:"weights_hashed,omitempty"`
}

// openLM opens a model and its runtime; it returns the load time.
func openLM(nameOrPath string, f lmFlags) (*llama.Model, float64, error) {
	start := time.Now()
	// The source decodes with the same provider as the model runs on.
	src, _, err := loader.Open(nameOrPath, f.env())
	if err != nil {
		return nil, 0, err
	}
	defer src.Close()
	m, err := llama.OpenSource(src, llama.Options{Provider: f.provider, Threads: f.threads, Build: llama.BuildOptions{Weight: f.weight},
		Logf: func(format string, args ...any) { fmt.Fprintf(os.Stderr, "nwc: "+format+"\n", args...) }})
	if err != nil {
		return nil, 0, err
	}
	return m, time.Since(start).Seconds(), nil
}

func runEval(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("eval", flag.ContinueOnError)
	model := fs.String("model", "", "model: reference name, GGUF, safetensors or .nwc path")
	ref := fs.String("reference", "", "reference model for the KL divergence (same tokenizer)")
	text := fs.String("text", "", "text file, one row per line (default: the WikiText-2 test text the project carries)")
	seqLen := fs.Int("seq-len", eval.DefaultSeqLen, "window length in tokens")
	maxWin := fs.Int("max-windows", 0, "evaluate only the first K windows (0 = all)")
	firstWin := fs.Int("first-window", 0, "skip the first N windows (split a long run into ranges whose results merge: weight mean_nll, mean_kl and top1_agreement by tokens_scored)")
	scoreFrom := fs.Int("score-from", 0, "score only predictions at window positions >= N (llama-perplexity's protocol: seq-len/2)")
	asJSON := fs.Bool("json", false, "print a JSON report")
	quiet := fs.Bool("q", false, "no progress bar")
	refCache := fs.String("reference-cache", "", "keep the reference's logits (and each row's log-sum-exp) in this folder (one file per window, ~400 MB each at 2048 tokens): later runs on the same windows reuse them")
	digest := fs.Bool("digest", false, "print the sha256 digest of the weights the runtime was built with (compare with nwc inspect --digest)")
	mode := fs.String("mode", modeAuto, "lm (perplexity/KL) or embed (sentence-embedding fidelity to --reference); default: embed for a BERT encoder, lm otherwise")
	nSent := fs.Int("sentences", embed.DefaultSentences, "--mode embed: sentences of the WikiText-2 test text compared")
	topK := fs.Int("topk", embed.DefaultTopK, "--mode embed: k of the top-k retrieval agreement")
	var lf lmFlags
	lf.register(fs)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if *model == "" && len(pos) == 1 {
		*model = pos[0]
	} else if len(pos) > 0 {
		return fmt.Errorf("eval: unexpected arguments %v", pos)
	}
	if *model == "" {
		fmt.Fprintln(os.Stderr, "usage: nwc eval --model NAME|PATH [--reference NAME|PATH] [--text PATH] [--seq-len N] [--max-windows K] [--score-from N] [--json] [--provider cpu|cuda] [--threads N]")
		fmt.Fprintln(os.Stderr, "       nwc eval --mode embed --model NAME|PATH --reference NAME|PATH [--sentences N] [--topk K] [--json]")
		return errUsage
	}
	if err := lf.init(); err != nil {
		return fmt.Errorf("eval: %w", err)
	}
	src, _, err := loader.Open(*model, lf.env())
	if err != nil {
		return err
	}
	switch *mode {
	case modeAuto, modeLM, modeEmbed:
	default:
		src.Close()
		return fmt.Errorf("eval: --mode %q: want %s or %s", *mode, modeLM, modeEmbed)
	}
	if *mode == modeEmbed || (*mode == modeAuto && bert.IsBERT(src)) {
		src.Close()
		if *text != "" || *digest {
			return fmt.Errorf("eval: --text and --digest apply to --mode lm; the embedding mode uses the WikiText-2 sentences of eval/embed")
		}
		return runEvalEmbed(ctx, *model, *ref, *nSent, *topK, *asJSON, lf)
	}
	tok, err := tokenizer.ForSource(src)
	if err != nil {
		src.Close()
		return err
	}
	defer tok.Close()
	out := evalJSON{}
	if nf, ok := src.(*loader.NWCFile); ok {
		out.FileBytes = nf.Container().Size()
		out.LinearBitsPerW = loader.LinearBitsPerWeight(nf.Container())
	}
	src.Close()

	var dig *weightDigest
	mlf := lf
	if *digest {
		dig = newWeightDigest()
		mlf.weight = dig.add
	}
	lm, loadSecs, err := openLM(*model, mlf)
	if err != nil {
		return err
	}
	defer lm.Close()
	if dig != nil {
		out.WeightsSHA256, out.WeightsHashed = dig.sum(), len(dig.per)
	}
	out.LoadSeconds, out.Provider = loadSecs, lm.Provider()
	var refLM eval.LM
	if *ref != "" {
		r, secs, err := openLM(*ref, lf)
		if err != nil {
			return err
		}
		defer r.Close()
		if r.Vocab() != lm.Vocab() {
			return fmt.Errorf("eval: reference vocabulary %d differs from the model's %d", r.Vocab(), lm.Vocab())
		}
		refLM, out.ReferenceLoadSecs = r, secs
		if *refCache != "" {
			if refLM, err = newCachedLM(r, *refCache, *ref, lf.provider); err != nil {
				return err
			}
		}
	}
	var bar *progressbar.ProgressBar
	opts := eval.Options{SeqLen: *seqLen, MaxWindows: *maxWin, FirstWindow: *firstWin, ScoreFrom: *scoreFrom}
	if !*quiet { // on stderr: --json output on stdout stays clean
		opts.Progress = func(p eval.Progress) {
			if bar == nil {
				bar = progressbar.NewOptions(p.Windows, progressbar.OptionSetWriter(os.Stderr),
					progressbar.OptionSetDescription("eval"), progressbar.OptionShowCount(),
					progressbar.OptionSetPredictTime(true), progressbar.OptionSetWidth(30))
			}
			bar.Describe(fmt.Sprintf("eval ppl %.3f", p.Perplexity))
			bar.Set(p.Window)
		}
	}
	rep, err := eval.Evaluate(ctx, lm, refLM, tok, eval.Config{Model: *model, Reference: *ref, TextPath: *text, Options: opts})
	if bar != nil {
		bar.Finish()
		fmt.Fprintln(os.Stderr)
	}
	if err != nil {
		return err
	}
	out.Report = rep
	if *asJSON {
		return writeJSON(os.Stdout, out)
	}
	if err := rep.WriteText(os.Stdout); err != nil {
		return err
	}
	fmt.Printf("load:            %.1f s (%s)\n", out.LoadSeconds, out.Provider)
	if out.WeightsSHA256 != "" {
		fmt.Printf("weights sha256:  %s (%d tensors, float32 values the runtime was built with)\n", out.WeightsSHA256, out.WeightsHashed)
	}
	if out.FileBytes > 0 {
		fmt.Printf("file:            %d bytes; linear weights at %.3f bits/weight\n", out.FileBytes, out.LinearBitsPerW)
	}
	return nil
}
