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
)

// runBenchEmbed compresses a sentence encoder at every point, and measures
// the fidelity of each file's embeddings to the uncompressed model's
// (eval/embed): docs/results/embed-<model>.{md,json,png}.
func runBenchEmbed(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench embed", flag.ContinueOnError)
	sw := newBenchSweep(fs, "embed", "minilm-l6", "reference sentence encoder", "rtn-g128", "3,4")
	nSent := fs.Int("sentences", embed.DefaultSentences, "sentences of the WikiText-2 test text (eval/embed rule)")
	topK := fs.Int("topk", embed.DefaultTopK, "k of the top-k retrieval agreement")
	if _, err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	model, lf := *sw.model, sw.lf
	if err := lf.init(); err != nil {
		return fmt.Errorf("bench embed: %w", err)
	}
	rep := &report.EmbedReport{}
	points, stem, found, err := sw.start(rep)
	if err != nil {
		return err
	}
	if found && (rep.Model != model || rep.Sentences != *nSent) {
		return fmt.Errorf("bench embed: --resume: %s.json is for model %s, %d sentences", stem, rep.Model, rep.Sentences)
	}
	rep.Title = fmt.Sprintf("%s: bits/weight vs embedding fidelity", model)
	rep.Model, rep.Sentences, rep.SentenceRule = model, *nSent, embed.SentenceRule
	rep.Command = "bin/nwc " + strings.Join(append([]string{"bench"}, args...), " ")
	sentences, err := embed.Sentences(*nSent)
	if err != nil {
		return err
	}
	src, _, err := loader.Open(model, codec.Env{})
	if err != nil {
		return err
	}
	defer src.Close()
	refModel, _, err := openEncoder(model, lf)
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
	// Sink weighting does not apply to an encoder (eval/calib forBERT).
	hess, err := sw.calibrate(ctx, src, points, rep, calib.DefaultSinkWeight, note, func(info *calibInfo) string {
		return fmt.Sprintf("gptq-g128, ecsq, nwc: H = X^T X from %d tokens (%d windows of [CLS] + %d + [SEP] tokens) of %s (no attention-sink weighting for an encoder); rtn-g128 uses no calibration.",
			info.Tokens, info.Windows, info.Tokens/int64(max(info.Windows, 1)), info.Text)
	})
	if err != nil {
		return err
	}
	note(fmt.Sprintf("nwc, ecsq: LDLQ error feedback every %d columns; gptq-g128: column by column (GPTQ), groups of 128.", sw.feedbackBlock()))
	note("bits/weight counts the section bytes of the encoder blocks' linear weights (query, key, value, attention output, intermediate, output: 10.6M of the model's 22.7M weights); the whole-file figure adds every other tensor (word/position embeddings, LayerNorms, biases, pooler: kept losslessly in fp32).")
	note("Embeddings as sentence-transformers computes them (plugin/bert: mean pooling over the attention mask, L2 normalisation); cosine of each sentence's embedding to the uncompressed model's; top-k agreement: for every sentence as a query, |top-k neighbours (cosine, among the other sentences) under the compressed model ∩ under the reference| / k, averaged.")
	return sw.measure(points, rep, stem, note, func(p benchPoint) (string, error) {
		pt, err := benchEmbedOne(ctx, src, refEmb, sentences, *topK, p, hess, *sw.fbBlock, tmp, lf)
		if err != nil {
			return "", err
		}
		rep.Points = append(rep.Points, pt)
		return fmt.Sprintf("%.3f bits/weight, mean cosine %.5f (p1 %.5f), top-%d agreement %.4f",
			pt.BitsPerWeight, pt.MeanCosine, pt.P1Cosine, pt.TopK, pt.TopKAgreement), nil
	})
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
