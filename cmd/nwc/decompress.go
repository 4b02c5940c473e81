package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/nwc-project/nwc/loader"
)

func runDecompress(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("decompress", flag.ContinueOnError)
	out := fs.String("o", "", "output .safetensors file")
	quiet := fs.Bool("q", false, "no progress bar")
	var of ortFlags
	of.register(fs)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || *out == "" {
		fmt.Fprintln(os.Stderr, "usage: nwc decompress IN.nwc -o OUT.safetensors [--provider cpu|cuda] [--threads N]")
		return errUsage
	}
	if err := of.init(); err != nil {
		return fmt.Errorf("decompress: %w", err)
	}
	start := time.Now()
	src, _, err := loader.Open(pos[0], of.env())
	if err != nil {
		return err
	}
	defer src.Close()
	progress, finish := newProgress("decompress", *quiet)
	err = loader.Decompress(ctx, src, *out, loader.DecompressOptions{Progress: progress})
	finish()
	if err != nil {
		return err
	}
	fmt.Printf("%s: %d tensors written in %.1f s\n", *out, len(src.Tensors()), time.Since(start).Seconds())
	return nil
}
