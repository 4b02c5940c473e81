package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/schollz/progressbar/v3"

	"github.com/nwc-project/nwc/loader"
	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/ortcodec/calib"
	"github.com/nwc-project/nwc/plugin/tokenizer"
)

func runCompress(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("compress", flag.ContinueOnError)
	model := fs.String("model", "", "model to compress: reference name (nwc models) or path")
	codecName := fs.String("codec", "lossless", "codec: lossless, nwc (shipped codec closest to --bits), nwc:NAME, rtn-g128, rtn-row, gptq-g128, ecsq")
	bits := fs.Float64("bits", 4, "bit width of the lossy codecs")
	out := fs.String("o", "", "output .nwc file")
	jobs := fs.Int("j", 0, "tensors coded in parallel (0 = all cores)")
	asJSON := fs.Bool("json", false, "print a JSON summary")
	calibTokens := fs.Int("calib-tokens", calib.DefaultTokens, "calibration tokens for H = X^T X (gptq, ecsq, nwc), from the carried Gutenberg text")
	noCalib := fs.Bool("no-calib", false, "no calibration data: H = I (no error feedback, all columns equally important)")
	var lf lmFlags
	lf.register(fs)
	quiet := fs.Bool("q", false, "no progress bar")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if *model == "" && len(pos) == 1 {
		*model = pos[0]
	} else if len(pos) > 0 {
		return fmt.Errorf("compress: unexpected arguments %v", pos)
	}
	if *model == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "usage: nwc compress --model PATH|NAME --codec lossless -o OUT.nwc")
		return errUsage
	}
	src, _, err := loader.Open(*model)
	if err != nil {
		return err
	}
	defer src.Close()
	opts := loader.CompressOptions{Codec: *codecName, Bits: *bits, Concurrency: *jobs}
	if usesCalibration(*codecName) {
		if *noCalib {
			fmt.Fprintln(os.Stderr, "nwc:", calib.NoCalibrationNote)
		} else {
			h, err := collectHessians(ctx, src, *calibTokens, lf, *quiet || *asJSON)
			if err != nil {
				return err
			}
			opts.Hessian = func(name string, n int) ([]float64, error) {
				H, ok, err := h.HOrIdentity(name, n)
				if err != nil || !ok {
					return nil, err
				}
				return H, nil
			}
		}
	}
	progress, finish := newProgress("compress", *quiet || *asJSON)
	opts.Progress = progress
	sum, err := loader.Compress(ctx, src, *out, opts)
	finish()
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(os.Stdout, sum)
	}
	fmt.Printf("%s: %d tensors, %d weights, %d -> %d bytes, %.3f bits/weight (whole file), %.1f s\n",
		sum.Output, len(sum.Tensors), sum.Weights, sum.RawBytes, sum.FileBytes, sum.BitsPerWeight, sum.Seconds)
	return nil
}

// usesCalibration reports whether a codec uses H.
func usesCalibration(codec string) bool {
	return codec == "gptq-g128" || codec == "ecsq" || codec == "nwc" || strings.HasPrefix(codec, "nwc:")
}

// collectHessians gets H for every block linear of src: from the cache, or
// by running the model on the calibration text.
func collectHessians(ctx context.Context, src tensor.Source, tokens int, lf lmFlags, quiet bool) (*calib.Hessians, error) {
	tok, err := tokenizer.ForSource(src)
	if err != nil {
		return nil, err
	}
	defer tok.Close()
	var bar *progressbar.ProgressBar
	opts := calib.Options{Tokens: tokens, Provider: lf.provider, Threads: lf.threads,
		Logf: func(format string, args ...any) { fmt.Fprintf(os.Stderr, "nwc: "+format+"\n", args...) }}
	if !quiet {
		opts.Progress = func(done, total int) {
			if bar == nil {
				bar = progressbar.NewOptions(total, progressbar.OptionSetWriter(os.Stderr),
					progressbar.OptionSetDescription("calibrate (tokens)"), progressbar.OptionShowCount(),
					progressbar.OptionSetPredictTime(true), progressbar.OptionSetWidth(30))
			}
			bar.Set(done)
		}
	}
	h, err := calib.Collect(ctx, src, tok, opts)
	if bar != nil {
		bar.Finish()
		fmt.Fprintln(os.Stderr)
	}
	return h, err
}
