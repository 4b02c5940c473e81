// Command nwc compresses, decompresses and inspects language-model weights.
//
//	nwc inspect PATH|NAME [--json] [--verify]
//	nwc compress --model PATH|NAME --codec lossless -o out.nwc [--json]
//	nwc decompress IN.nwc -o out.safetensors
//	nwc models
//
// eval, bench and the calibration step of compress run the model through ONNX
// Runtime and need cgo; a binary built with CGO_ENABLED=0 has the other
// commands (and compress --no-calib, or with the codecs that use no
// calibration) and says so for these.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/nwc-project/nwc/loader/codec"
)

type command struct {
	name  string
	usage string
	run   func(ctx context.Context, args []string) error
}

var commands = []command{
	{"inspect", "PATH|NAME [--json] [--verify]    list tensors, dtypes, shapes, bytes and bits/weight", runInspect},
	{"compress", "--model PATH|NAME [--codec " + strings.Join(codec.Names(), "|") + "|nwc:NAME] [--bits B] -o OUT.nwc [--json] [-j N]", runCompress},
	{"decompress", "IN.nwc|PATH|NAME -o OUT.gguf|DIR|OUT.safetensors [--format gguf|safetensors|tensors] [--dtype f32|f16|bf16|q8_0]", runDecompress},
	{"eval", "--model NAME|PATH [--reference NAME|PATH] [--text PATH] [--seq-len N] [--max-windows K] [--json]", runEval},
	{"generate", "--model NAME|PATH [--prompt TEXT] [--chat] [--max-tokens N] [--temperature T --top-k K --top-p P --seed S] [--stop STR]", runGenerate},
	{"serve", "--model NAME|PATH [--addr 127.0.0.1:8080] [--parallel N] [--max-queue N]   OpenAI-compatible HTTP server (docs/SERVE.md)", runServe},
	{"bench", "rd|embed|decode|load|pareto [flags]   rate-distortion (perplexity/KL; sentence-embedding fidelity), decode speed by stage, time to a ready model, KL against decode speed", runBench},
	{"tokenize", "--model NAME|PATH [--text PATH] [--raw] [--ids-out FILE] [--round-trip] [--json]   token count and ids sha256 of a text", runTokenize},
	{"models", "                                  list the reference models and where they are cached", runModels},
	{"codecs", "[--json]                          list the codecs (registry) and the trained nwc codecs with their rates", runCodecs},
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: nwc COMMAND [flags]")
	for _, c := range commands {
		fmt.Fprintf(os.Stderr, "  nwc %-11s %s\n", c.name, c.usage)
	}
}

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		usage()
		if len(os.Args) < 2 {
			os.Exit(2)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	for _, c := range commands {
		if c.name == os.Args[1] {
			if err := c.run(ctx, os.Args[2:]); err != nil {
				if errors.Is(err, errUsage) {
					os.Exit(2)
				}
				// Errors from the packages often start with "nwc: " already.
				fmt.Fprintln(os.Stderr, "nwc:", strings.TrimPrefix(err.Error(), "nwc: "))
				os.Exit(1)
			}
			return
		}
	}
	fmt.Fprintf(os.Stderr, "nwc: unknown command %q\n", os.Args[1])
	usage()
	os.Exit(2)
}

var errUsage = errors.New("usage")
