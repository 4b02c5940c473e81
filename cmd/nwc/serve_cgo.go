//go:build cgo

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nwc-project/nwc/loader"
	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/plugin/llama"
	"github.com/nwc-project/nwc/plugin/serve"
)

// serveFlags are `nwc serve`'s flags.
type serveFlags struct {
	model, addr, modelID string
	parallel, maxQueue   int
	maxTokens, context   int
	grace                time.Duration
	quiet                bool
	ort                  ortFlags
}

func parseServeFlags(args []string) (*serveFlags, error) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	f := &serveFlags{}
	fs.StringVar(&f.model, "model", "", "model: reference name, GGUF, safetensors or .nwc path")
	fs.StringVar(&f.addr, "addr", "127.0.0.1:8080", "listen address (host:port; port 0 picks a free one)")
	fs.StringVar(&f.modelID, "model-id", "", "the model's name in the API (default: the reference name, or the file name without its extension)")
	fs.IntVar(&f.parallel, "parallel", 2, "generations that run at once, each with its own KV cache")
	fs.IntVar(&f.maxQueue, "max-queue", 16, "requests that may wait for a slot; beyond that: 429")
	fs.IntVar(&f.maxTokens, "max-tokens", 256, "tokens generated when a request sets no max_tokens")
	fs.IntVar(&f.context, "context", 0, "most tokens in a sequence, prompt included (0 = the model's trained context)")
	fs.DurationVar(&f.grace, "grace", 30*time.Second, "on SIGINT/SIGTERM, how long requests in flight may take before they are cancelled")
	fs.BoolVar(&f.quiet, "q", false, "no progress bar while the model loads")
	f.ort.register(fs)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return nil, err
	}
	if len(pos) > 0 || f.model == "" {
		fmt.Fprintln(os.Stderr, "usage: nwc serve --model NAME|PATH [--addr HOST:PORT] [--parallel N] [--max-queue N] [--max-tokens N] [--context N] [--grace D] [--threads N]")
		return nil, errUsage
	}
	if f.parallel < 1 || f.maxQueue < 0 || f.maxTokens < 1 || f.context < 0 || f.grace < 0 {
		return nil, errors.New("serve: need --parallel >= 1, --max-queue >= 0, --max-tokens >= 1, --context >= 0, --grace >= 0")
	}
	if f.modelID == "" {
		f.modelID = defaultModelID(f.model)
	}
	return f, nil
}

// defaultModelID is a model's name in the API: a reference name as it is,
// a path's file name without its extension.
func defaultModelID(model string) string {
	base := filepath.Base(model)
	if base == model && !strings.ContainsAny(model, ".") {
		return model
	}
	if ext := filepath.Ext(base); ext != "" && ext != base {
		base = strings.TrimSuffix(base, ext)
	}
	return base
}

// progressSource counts the weight bytes read from a source while the
// decoder is built (the prefetcher reads from several goroutines).
type progressSource struct {
	tensor.Source
	sizes map[string]int64
	done  atomic.Int64
	step  func(done int64)
}

func newProgressSource(src tensor.Source, progress func(done, total int64)) *progressSource {
	p := &progressSource{Source: src, sizes: map[string]int64{}}
	var total int64
	for _, t := range src.Tensors() {
		p.sizes[t.Name] = t.Size
		total += t.Size
	}
	p.step = func(done int64) { progress(done, total) }
	return p
}

func (p *progressSource) ReadFloat32(name string, dst []float32) ([]float32, error) {
	v, err := p.Source.ReadFloat32(name, dst)
	if err == nil {
		p.step(p.done.Add(p.sizes[name]))
	}
	return v, err
}

func (p *progressSource) ReadRaw(name string, dst []byte) ([]byte, error) {
	v, err := p.Source.ReadRaw(name, dst)
	if err == nil {
		p.step(p.done.Add(p.sizes[name]))
	}
	return v, err
}

func runServe(ctx context.Context, args []string) error {
	f, err := parseServeFlags(args)
	if err != nil {
		return err
	}
	if err := f.ort.init(); err != nil {
		return err
	}
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "%s nwc: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
	}
	start := time.Now()
	src, _, err := loader.Open(f.model, f.ort.env())
	if err != nil {
		return err
	}
	progress, finish := newProgress("load "+f.modelID, f.quiet)
	var psrc tensor.Source = src
	if progress != nil {
		var mu sync.Mutex // the prefetcher reads from several goroutines
		psrc = newProgressSource(src, func(done, total int64) {
			mu.Lock()
			defer mu.Unlock()
			progress(done, total)
		})
	}
	eng, err := serve.OpenLlamaEngine(psrc, llama.Options{Provider: f.ort.provider, Threads: f.ort.threads, Logf: logf})
	finish()
	src.Close()
	if err != nil {
		return err
	}
	defer eng.Close()
	ln, err := net.Listen("tcp", f.addr)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	srv := serve.New(eng, serve.Options{ModelID: f.modelID, Parallel: f.parallel, MaxQueue: f.maxQueue,
		DefaultMaxTokens: f.maxTokens, ContextLength: f.context, Logf: logf})
	logf("%s loaded in %.1fs (%s, context %d); serving http://%s/v1 (parallel %d, queue %d); SIGINT/SIGTERM to stop",
		f.modelID, time.Since(start).Seconds(), eng.Decoder().Provider(), max(f.context, eng.ContextLength()), ln.Addr(), f.parallel, f.maxQueue)
	go func() {
		// After the first signal, a second one ends the process at once.
		<-ctx.Done()
		signal.Reset(os.Interrupt, syscall.SIGTERM)
	}()
	if err := srv.Serve(ctx, ln, f.grace); err != nil {
		return err
	}
	st := srv.Stats()
	logf("stopped: %d completed, %d cancelled, %d rejected (429), %d invalid (400), %d failed; %d tokens generated",
		st.Completed, st.Cancelled, st.Rejected, st.Invalid, st.Failed, st.Tokens)
	return nil
}
