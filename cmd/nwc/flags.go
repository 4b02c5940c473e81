package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/nwc-project/nwc/internal/ortenv"
	"github.com/nwc-project/nwc/loader/codec"
)

// parseFlags parses flags that may appear before or after positional
// arguments, and returns the positional ones.
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	fs.SetOutput(os.Stderr)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, errUsage
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// newProgress returns a progress callback drawing a byte progress bar on
// stderr, and a function that finishes it. quiet disables it.
func newProgress(desc string, quiet bool) (func(done, total int64), func()) {
	if quiet {
		return nil, func() {}
	}
	// The bar starts now, with the work, so that its rate is bytes over the
	// time really spent (created at the first callback, it would divide the
	// first tensor's bytes by microseconds and show TB/s). The total comes
	// with the first callback.
	bar := progressbar.NewOptions64(-1,
		progressbar.OptionSetWriter(os.Stderr),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionShowBytes(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(200*time.Millisecond),
		progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(true),
	)
	sized := false
	return func(done, total int64) {
			if !sized {
				bar.ChangeMax64(total)
				sized = true
			}
			bar.Set64(done)
		}, func() {
			bar.Finish()
			fmt.Fprintln(os.Stderr)
		}
}

// ortFlags are the ONNX Runtime flags of every command that may run a
// network (decoding a neural-coded tensor, calibration, evaluation).
type ortFlags struct {
	provider string
	threads  int
}

func (f *ortFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.provider, "provider", "cpu", "ONNX Runtime execution provider: cpu, or cuda (the GPU build from `make setup-cuda`, docs/GPU.md; when CUDA cannot be used the command fails and says why)")
	fs.IntVar(&f.threads, "threads", 0, "ONNX Runtime intra-op threads (0 = its default)")
}

// env is what codecs get: the provider and threads.
func (f *ortFlags) env() codec.Env {
	return codec.Env{Provider: f.provider, Threads: f.threads}
}

// init checks the provider name and, for cuda, loads the GPU build of ONNX
// Runtime now, before anything else can load the CPU one (the first library
// loaded stays for the life of the process). When CUDA cannot be used the
// error says why and how to do without (--provider cpu): nwc does not fall
// back on its own. For cpu nothing is loaded until a network runs.
func (f *ortFlags) init() error {
	p, err := ortenv.NormalizeProvider(f.provider)
	if err != nil {
		return err
	}
	f.provider = p
	if f.threads < 0 {
		return fmt.Errorf("--threads %d < 0", f.threads)
	}
	if p == ortenv.ProviderCUDA {
		return ortenv.InitProvider(p)
	}
	return nil
}

// lmFlags are the runtime flags of the commands that run a model (eval,
// bench, and compress for its calibration).
type lmFlags struct {
	ortFlags
	weight func(name string, v []float32) // llama.BuildOptions.Weight
}
