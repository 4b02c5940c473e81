//go:build cgo

package main

import (
	"context"
	"fmt"
	"os"

	"github.com/schollz/progressbar/v3"

	"github.com/nwc-project/nwc/eval/calib"
	"github.com/nwc-project/nwc/loader"
	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/plugin/tokenizer"
)

// calibrationFor gives the H of every block linear of src for the codecs
// that use it: collected (or cached) from the calibration text, or the
// identity with noCalib.
func calibrationFor(ctx context.Context, src tensor.Source, noCalib bool, tokens int, sinkWeight float64, lf lmFlags, quiet bool) (loader.HessianFunc, *calibInfo, error) {
	if noCalib {
		fmt.Fprintln(os.Stderr, "nwc:", calib.NoCalibrationNote)
		return nil, &calibInfo{Note: calib.NoCalibrationNote}, nil
	}
	h, err := collectHessians(ctx, src, tokens, sinkWeight, lf, quiet)
	if err != nil {
		return nil, nil, err
	}
	info := &calibInfo{Protocol: calib.ProtocolOnePass, Text: h.TextName, Tokens: h.Tokens, Windows: h.Windows, SinkWeight: h.SinkWeight, Cached: h.Cached}
	if !quiet {
		fmt.Fprintf(os.Stderr, "nwc: calibration: H = X^T X over %d tokens (%d windows) of %s, first tokens weighted x%g, cached %v\n",
			h.Tokens, h.Windows, h.TextName, h.SinkWeight, h.Cached)
	}
	return func(name string, n int) ([]float64, error) {
		H, ok, err := h.HOrIdentity(name, n)
		if err != nil || !ok {
			return nil, err
		}
		return H, nil
	}, info, nil
}

// sequentialFor prepares the sequential (GPTQ) protocol for src; info
// describes it once the compression is done.
func sequentialFor(ctx context.Context, src tensor.Source, tokens int, sinkWeight float64, lf lmFlags, quiet bool) (loader.SequentialCalibration, func() *calibInfo, error) {
	tok, err := tokenizer.ForSource(src)
	if err != nil {
		return nil, nil, err
	}
	defer tok.Close()
	opts := calib.Options{Tokens: tokens, SinkWeight: sinkWeight, Provider: lf.provider, Threads: lf.threads,
		Logf: func(format string, args ...any) { fmt.Fprintf(os.Stderr, "nwc: "+format+"\n", args...) }}
	if !quiet {
		var bar *progressbar.ProgressBar
		opts.Progress = func(done, total int) {
			if bar == nil {
				bar = progressbar.NewOptions(total, progressbar.OptionSetWriter(os.Stderr),
					progressbar.OptionSetDescription("sequential calibration + coding (linear inputs)"), progressbar.OptionShowCount(),
					progressbar.OptionSetPredictTime(true), progressbar.OptionSetWidth(30))
			}
			bar.Set(done)
			if done == total {
				bar.Finish()
				fmt.Fprintln(os.Stderr)
			}
		}
	}
	seq, err := calib.NewSequential(ctx, src, tok, opts)
	if err != nil {
		return nil, nil, err
	}
	info := func() *calibInfo {
		h := seq.Info()
		if !quiet {
			fmt.Fprintf(os.Stderr, "nwc: calibration (sequential): H = X^T X over %d tokens (%d windows) of %s from the model coded so far, first tokens weighted x%g, cached %v, %.1f s\n",
				h.Tokens, h.Windows, h.TextName, h.SinkWeight, h.Cached, h.Seconds)
		}
		return &calibInfo{Protocol: calib.ProtocolSequential, Text: h.TextName, Tokens: h.Tokens, Windows: h.Windows, SinkWeight: h.SinkWeight, Cached: h.Cached, Seconds: h.Seconds}
	}
	return seq, info, nil
}

// collectHessians gets H for every block linear of src: from the cache, or
// by running the model on the calibration text.
func collectHessians(ctx context.Context, src tensor.Source, tokens int, sinkWeight float64, lf lmFlags, quiet bool) (*calib.Hessians, error) {
	tok, err := tokenizer.ForSource(src)
	if err != nil {
		return nil, err
	}
	defer tok.Close()
	var bar *progressbar.ProgressBar
	opts := calib.Options{Tokens: tokens, SinkWeight: sinkWeight, Provider: lf.provider, Threads: lf.threads,
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
