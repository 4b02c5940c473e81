//go:build cgo

package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/nwc-project/nwc/eval/calib"
	"github.com/nwc-project/nwc/eval/embed"
	"github.com/nwc-project/nwc/eval/report"
	"github.com/nwc-project/nwc/loader"
	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/ortcodec/ldlq"
)

// runBenchEmbed compresses a sentence encoder at every point, and measures
// the fidelity of each file's embeddings to the uncompressed model's
// (eval/embed): docs/results/embed-<model>.{md,json,png}.
func runBenchEmbed(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench embed", flag.ContinueOnError)
	model := fs.String("model", "minilm-l6", "reference sentence encoder")
	var runs runList
	fs.Var(&runs, "run", "CODEC=B1,B2,... (bits), or nwc / nwc=NAME1,NAME2 (shipped codecs); repeatable; overrides --codecs/--bits")
	codecs := fs.String("codecs", "rtn-g128", "comma-separated codecs (each at every --bits)")
	bitsList := fs.String("bits", "3,4", "comma-separated bit widths")
	nSent := fs.Int("sentences", embed.DefaultSentences, "sentences of the WikiText-2 test text (eval/embed rule)")
	topK := fs.Int("topk", embed.DefaultTopK, "k of the top-k retrieval agreement")
	outDir := fs.String("out", "docs/results", "directory for embed-<model>.{md,json,png}")
	name := fs.String("name", "", "report file stem (default embed-<model>)")
	resume := fs.Bool("resume", false, "keep the points already in the report's JSON and measure only the missing ones")
	calibTokens := fs.Int("calib-tokens", calib.DefaultTokens, "calibration tokens for H (gptq, ecsq, nwc)")
	noCalib := fs.Bool("no-calib", false, "no calibration data: H = I")
	fbBlock := fs.Int("feedback-block", 0, "LDLQ error-feedback block in columns for nwc and ecsq (0 = 16)")
	var lf lmFlags
	lf.register(fs)
	if _, err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if err := lf.init(); err != nil {
		return fmt.Errorf("bench embed: %w", err)
	}
	points, err := benchPoints(runs, *codecs, *bitsList)
	if err != nil {
		return err
	}
	if *name == "" {
		*name = "embed-" + filepath.Base(*model)
	}
	stem := filepath.Join(*outDir, *name)
	rep := &report.EmbedReport{}
	if *resume {
		found, err := loadResume(stem, rep)
		if err != nil {
			return err
		}
		if found && (rep.Model != *model || rep.Sentences != *nSent) {
			return fmt.Errorf("bench embed: --resume: %s.json is for model %s, %d sentences", stem, rep.Model, rep.Sentences)
		}
	}
	rep.Title = fmt.Sprintf("%s: bits/weight vs embedding fidelity", *model)
	rep.Model, rep.Sentences, rep.SentenceRule = *model, *nSent, embed.SentenceRule
	rep.Command = "bin/nwc " + strings.Join(append([]string{"bench"}, args...), " ")
	if err := os.MkdirAll(*outDir, 0o755); err != nil {
		return err
	}
	sentences, err := embed.Sentences(*nSent)
	if err != nil {
		return err
	}
	src, _, err := loader.Open(*model, codec.Env{})
	if err != nil {
		return err
	}
	defer src.Close()
	refModel, _, err := openEncoder(*model, lf)
	if err != nil {
		return err
	}
	refEmb, err := refModel.Embed(ctx, sentences)
	refModel.Close()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "nwc-bench-embed-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	note := noter(&rep.Notes)
	var hess loader.HessianFunc
	for _, p := range points {
		if rep.Has(p.method, p.setting) || !usesCalibration(p.codec) {
			continue
		}
		// Sink weighting does not apply to an encoder (eval/calib forBERT).
		h, info, err := calibrationFor(ctx, src, *noCalib, *calibTokens, calib.DefaultSinkWeight, lf, false)
		if err != nil {
			return err
		}
		hess = h
		if info.Tokens == 0 {
			note("gptq-g128, ecsq, nwc: " + info.Note)
		} else {
			note(fmt.Sprintf("gptq-g128, ecsq, nwc: H = X^T X from %d tokens (%d windows of [CLS] + %d + [SEP] tokens) of %s (no attention-sink weighting for an encoder); rtn-g128 uses no calibration.",
				info.Tokens, info.Windows, info.Tokens/int64(max(info.Windows, 1)), info.Text))
		}
		break
	}
	fb := *fbBlock
	if fb == 0 {
		fb = ldlq.FeedbackBlock
	}
	note(fmt.Sprintf("nwc, ecsq: LDLQ error feedback every %d columns; gptq-g128: column by column (GPTQ), groups of 128.", fb))
	note("bits/weight counts the section bytes of the encoder blocks' linear weights (query, key, value, attention output, intermediate, output: 10.6M of the model's 22.7M weights); the whole-file figure adds every other tensor (word/position embeddings, LayerNorms, biases, pooler: kept losslessly in fp32).")
	note("Embeddings as sentence-transformers computes them (plugin/bert: mean pooling over the attention mask, L2 normalisation); cosine of each sentence's embedding to the uncompressed model's; top-k agreement: for every sentence as a query, |top-k neighbours (cosine, among the other sentences) under the compressed model ∩ under the reference| / k, averaged.")
	for i, p := range points {
		if rep.Has(p.method, p.setting) {
			fmt.Fprintf(os.Stderr, "[%d/%d] %s %s: in the report already\n", i+1, len(points), p.method, p.setting)
			continue
		}
		if strings.HasPrefix(p.codec, "nwc:") {
			note(codecProvenance(strings.TrimPrefix(p.codec, "nwc:")))
		}
		fmt.Fprintf(os.Stderr, "[%d/%d] %s %s: compress\n", i+1, len(points), p.method, p.setting)
		pt, err := benchEmbedOne(ctx, src, refEmb, sentences, *topK, p, hess, *fbBlock, tmp, lf)
		if err != nil {
			return fmt.Errorf("bench embed: %s %s: %w", p.method, p.setting, err)
		}
		rep.Points = append(rep.Points, pt)
		fmt.Fprintf(os.Stderr, "[%d/%d] %s %s: %.3f bits/weight, mean cosine %.5f (p1 %.5f), top-%d agreement %.4f\n",
			i+1, len(points), p.method, p.setting, pt.BitsPerWeight, pt.MeanCosine, pt.P1Cosine, pt.TopK, pt.TopKAgreement)
		if err := writeReport(rep, len(rep.Points), stem); err != nil { // after every point
			return err
		}
	}
	if err := writeReport(rep, len(rep.Points), stem); err != nil {
		return err
	}
	fmt.Printf("wrote %s.md, %s.json, %s.png\n", stem, stem, stem)
	return rep.WriteMarkdown(os.Stdout)
}

// benchEmbedOne compresses src with one codec setting, loads the file
// through the encoder runtime (decoding every tensor) and compares its
// embeddings with refEmb.
func benchEmbedOne(ctx context.Context, src tensor.Source, refEmb [][]float32, sentences []string, k int, p benchPoint, hess loader.HessianFunc, fbBlock int, tmp string, lf lmFlags) (report.EmbedPoint, error) {
	path := filepath.Join(tmp, "point.nwc")
	defer os.Remove(path)
	co := loader.CompressOptions{Codec: p.codec, Bits: p.bits, FeedbackBlock: fbBlock}
	if usesCalibration(p.codec) {
		co.Hessian = hess
	}
	sum, err := loader.Compress(ctx, src, path, co)
	if err != nil {
		return report.EmbedPoint{}, err
	}
	m, _, err := openEncoder(path, lf)
	if err != nil {
		return report.EmbedPoint{}, err
	}
	defer m.Close()
	got, err := m.Embed(ctx, sentences)
	if err != nil {
		return report.EmbedPoint{}, err
	}
	r, err := embed.Compare(ctx, refEmb, got, k)
	if err != nil {
		return report.EmbedPoint{}, err
	}
	return report.EmbedPoint{Method: p.method, Setting: p.setting, BitsPerWeight: sum.LinearBitsPerWeight, FileBits: sum.BitsPerWeight,
		MeanCosine: r.MeanCosine, MinCosine: r.MinCosine, P1Cosine: r.P1Cosine, TopK: r.TopK, TopKAgreement: r.TopKAgreement,
		CompressSeconds: sum.Seconds}, nil
}
