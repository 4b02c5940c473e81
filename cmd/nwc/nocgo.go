//go:build !cgo

package main

import (
	"context"
	"fmt"
	"os"

	"github.com/nwc-project/nwc/eval/calib"
	"github.com/nwc-project/nwc/internal/ortenv"
	"github.com/nwc-project/nwc/loader"
	"github.com/nwc-project/nwc/loader/tensor"
)

// This file stands in for the commands and steps that run a model through
// ONNX Runtime, in a build without cgo: they fail with an error wrapping
// ortenv.ErrNoCGO. inspect, decompress, models and compress with the codecs
// that need no calibration (or with --no-calib) work as usual.

func runEval(ctx context.Context, args []string) error {
	return fmt.Errorf("eval: %w", ortenv.ErrNoCGO)
}

func runGenerate(ctx context.Context, args []string) error {
	return fmt.Errorf("generate: %w", ortenv.ErrNoCGO)
}

func runServe(ctx context.Context, args []string) error {
	return fmt.Errorf("serve: %w", ortenv.ErrNoCGO)
}

func runTokenize(ctx context.Context, args []string) error {
	return fmt.Errorf("tokenize: %w", ortenv.ErrNoCGO)
}

func runBenchRD(ctx context.Context, args []string) error {
	return fmt.Errorf("bench rd: %w", ortenv.ErrNoCGO)
}

func runBenchEmbed(ctx context.Context, args []string) error {
	return fmt.Errorf("bench embed: %w", ortenv.ErrNoCGO)
}

func runBenchLoad(ctx context.Context, args []string) error {
	return fmt.Errorf("bench load: %w", ortenv.ErrNoCGO)
}

// sequentialFor: the sequential protocol runs the model.
func sequentialFor(ctx context.Context, src tensor.Source, tokens int, sinkWeight float64, lf lmFlags, quiet bool) (loader.SequentialCalibration, func() *calibInfo, error) {
	return nil, nil, fmt.Errorf("compress: --calib %s runs the model: %w", calib.ProtocolSequential, ortenv.ErrNoCGO)
}

// calibrationFor returns the identity H with noCalib; collecting H runs the
// model, which this build cannot do.
func calibrationFor(ctx context.Context, src tensor.Source, noCalib bool, tokens int, sinkWeight float64, lf lmFlags, quiet bool) (loader.HessianFunc, *calibInfo, error) {
	if noCalib {
		fmt.Fprintln(os.Stderr, "nwc:", calib.NoCalibrationNote)
		return nil, &calibInfo{Note: calib.NoCalibrationNote}, nil
	}
	return nil, nil, fmt.Errorf("compress: calibration runs the model: %w (or pass --no-calib for H = I)", ortenv.ErrNoCGO)
}
