package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nwc-project/nwc/loader"
	"github.com/nwc-project/nwc/loader/tensor"
)

const decompressUsage = `usage: nwc decompress IN -o OUT [--format gguf|safetensors|tensors] [--dtype f32|f16|bf16|q8_0] [--provider cpu|cuda] [--threads N]
  --format gguf         a GGUF file for llama.cpp / ollama (all GGUF metadata and the tokenizer kept)
  --format safetensors  a Hugging Face folder OUT/ (model.safetensors, config.json, tokenizer.json, ...)
  --format tensors      one .safetensors file with the tensors as stored (names, dtypes) and the
                        assets beside it as OUT.<asset>
  without --format: OUT ending in .gguf -> gguf, in .safetensors -> tensors, else safetensors (a folder)`

func runDecompress(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("decompress", flag.ContinueOnError)
	out := fs.String("o", "", "output: .gguf file, Hugging Face folder or .safetensors file")
	format := fs.String("format", "", "gguf, safetensors (a Hugging Face folder) or tensors (default: from -o)")
	dtype := fs.String("dtype", "f32", "weights dtype: f32, f16, bf16 or (gguf) q8_0; not for --format tensors")
	quiet := fs.Bool("q", false, "no progress bar")
	var of ortFlags
	of.register(fs)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || *out == "" {
		fmt.Fprintln(os.Stderr, decompressUsage)
		return errUsage
	}
	f := *format
	if f == "" {
		switch {
		case strings.HasSuffix(strings.ToLower(*out), ".gguf"):
			f = "gguf"
		case strings.HasSuffix(strings.ToLower(*out), ".safetensors"):
			f = "tensors"
		default:
			f = "safetensors"
		}
	}
	dtSet := false
	fs.Visit(func(fl *flag.Flag) { dtSet = dtSet || fl.Name == "dtype" })
	var dt tensor.DType
	switch strings.ToLower(*dtype) {
	case "f32":
		dt = tensor.F32
	case "f16":
		dt = tensor.F16
	case "bf16":
		dt = tensor.BF16
	case "q8_0":
		dt = tensor.Q8_0
	default:
		return fmt.Errorf("decompress: --dtype %q: want f32, f16, bf16 or q8_0: %w", *dtype, errUsage)
	}
	switch {
	case f != "gguf" && f != "safetensors" && f != "tensors":
		return fmt.Errorf("decompress: --format %q: want gguf, safetensors or tensors: %w", f, errUsage)
	case f == "tensors" && dtSet:
		return fmt.Errorf("decompress: --dtype does not apply to --format tensors (tensors keep their dtype): %w", errUsage)
	case f == "safetensors" && dt == tensor.Q8_0:
		return fmt.Errorf("decompress: --dtype q8_0 is for --format gguf only: %w", errUsage)
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
	eo := loader.ExportOptions{DType: dt, Progress: progress}
	switch f {
	case "gguf":
		err = loader.WriteGGUFFile(ctx, src, *out, eo)
	case "safetensors":
		err = loader.WriteHF(ctx, src, *out, eo)
	default:
		err = loader.Decompress(ctx, src, *out, loader.DecompressOptions{Progress: progress})
	}
	finish()
	if err != nil {
		return err
	}
	fmt.Printf("%s (%s): %d tensors written in %.1f s\n", *out, f, len(src.Tensors()), time.Since(start).Seconds())
	return nil
}
