package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/nwc-project/nwc/loader"
)

func runCompress(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("compress", flag.ContinueOnError)
	model := fs.String("model", "", "model to compress: reference name (nwc models) or path")
	codecName := fs.String("codec", "lossless", "codec: lossless, rtn-g128, rtn-row, gptq-g128, ecsq")
	bits := fs.Float64("bits", 4, "bit width of the lossy codecs")
	out := fs.String("o", "", "output .nwc file")
	jobs := fs.Int("j", 0, "tensors coded in parallel (0 = all cores)")
	asJSON := fs.Bool("json", false, "print a JSON summary")
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
	progress, finish := newProgress("compress", *quiet || *asJSON)
	sum, err := loader.Compress(ctx, src, *out, loader.CompressOptions{Codec: *codecName, Bits: *bits, Concurrency: *jobs, Progress: progress})
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
