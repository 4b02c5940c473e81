//go:build cgo

// Package llama runs Llama-architecture decoders (SmolLM2, ...) with ONNX
// Runtime: Build turns a checkpoint (GGUF, safetensors or .nwc, any
// tensor.Source) into an ONNX graph with the weights as float32
// initializers, and Model holds one ONNX Runtime session of it that scores
// many token windows.
package llama

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"runtime/debug"
	"sync"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/nwc-project/nwc/internal/ortenv"
	"github.com/nwc-project/nwc/loader"
	"github.com/nwc-project/nwc/loader/arch"
	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/plugin/onnx"
)

// Options configure Open.
type Options struct {
	// Provider is "cpu" (default) or "cuda". When CUDA is unavailable the
	// model falls back to the CPU and reports it through Logf.
	Provider string
	// Threads is ONNX Runtime's intra-op thread count (<= 0: its default).
	Threads int
	// Logf receives notes such as a CUDA fallback (nil: log.Printf).
	Logf func(format string, args ...any)
	// Build passes options to Build (its External is set by Open from
	// Weights; Float16 is honoured off the CPU only).
	Build BuildOptions
	// Weights is how the weights reach ONNX Runtime: WeightsAuto ("",
	// the default), WeightsEmbedded or WeightsExternal.
	Weights string
	// TempDir is where the external weights file is written ("":
	// os.TempDir()). It is removed once the session is created (or, where
	// the OS refuses, on Close).
	TempDir string
}

// How the weights reach ONNX Runtime (Options.Weights).
const (
	// WeightsAuto: external above AutoExternalBytes of float32 weights,
	// embedded below.
	WeightsAuto = ""
	// WeightsEmbedded: float32 initializers inside the ONNX protobuf (one
	// message, under 2 GB: models up to about 500M parameters).
	WeightsEmbedded = "embedded"
	// WeightsExternal: ONNX external data, written to one temporary file
	// that ONNX Runtime reads (no size limit).
	WeightsExternal = "external"
)

// AutoExternalBytes is the weight size from which WeightsAuto stores the
// weights externally.
const AutoExternalBytes = 64 << 20

// Model is a Llama decoder loaded into one ONNX Runtime session. Logits may
// be called from several goroutines.
type Model struct {
	session
}

// session is what Model and Decoder share: the config, the provider and one
// ONNX Runtime session, with the accessors and Close.
type session struct {
	cfg      arch.Config
	provider string
	note     string

	// external: the weights reached ONNX Runtime as external data;
	// tmpDir: their folder, when it could not be removed at creation.
	external bool
	tmpDir   string

	mu   sync.RWMutex // guards sess against Close
	sess *ort.DynamicAdvancedSession
}

// Open opens the model nameOrPath (a reference model name or a GGUF,
// safetensors or .nwc path; see loader.Open) and builds its session.
func Open(nameOrPath string, opts Options) (*Model, error) {
	src, _, err := loader.Open(nameOrPath, codec.Env{})
	if err != nil {
		return nil, err
	}
	defer src.Close()
	return OpenSource(src, opts)
}

// OpenSource builds a model from the weights of src (which the caller
// still owns and may close once OpenSource returns).
func OpenSource(src tensor.Source, opts Options) (*Model, error) {
	cfg, err := arch.ConfigFromSource(src)
	if err != nil {
		return nil, err
	}
	// Decode the next weights (entropy decoding, neural decoder, dequantizing)
	// while Build lays out the current one.
	pf := prefetch(src, cfg)
	defer pf.Close()
	return newModel(cfg, opts, weightBytes(src), func(provider string, sink onnx.ExternalSink) ([]byte, error) {
		bo := buildOptions(cfg, opts, provider, sink)
		data, err := Build(cfg, pf, bo)
		// Drop Build's intermediate copies before ONNX Runtime makes its own.
		debug.FreeOSMemory()
		return data, err
	})
}

// buildOptions are opts.Build completed for provider: the default
// attention, the external sink, float16 only off the CPU.
func buildOptions(cfg arch.Config, opts Options, provider string, sink onnx.ExternalSink) BuildOptions {
	bo := opts.Build
	if bo.Attention == "" {
		bo.Attention = DefaultAttention(cfg, provider)
	}
	bo.External = sink
	if provider == ortenv.ProviderCPU {
		bo.Float16 = false
	}
	return bo
}

// weightBytes is the size of src's tensors as float32.
func weightBytes(src tensor.Source) int64 {
	var n int64
	for _, info := range src.Tensors() {
		e := int64(4)
		for _, d := range info.Shape {
			e *= d
		}
		n += e
	}
	return n
}

// DefaultAttention is the attention implementation Open uses for provider
// when Options.Build.Attention is empty: GroupQueryAttention on the CPU when
// the head size allows it (ONNX Runtime's CPU kernel skips the masked half
// and fuses the softmax: about 1.7x faster on 2048-token windows), standard
// operators otherwise (ONNX Runtime's CUDA GroupQueryAttention is fp16-only).
func DefaultAttention(cfg arch.Config, provider string) string {
	if provider == ortenv.ProviderCPU && cfg.HeadDim%16 == 0 {
		return AttentionGQA
	}
	return AttentionStandard
}

// sessionOptions initializes ONNX Runtime and returns session options for
// provider, falling back to the CPU with a note (logged through logf, or
// log.Printf when logf is nil); it also returns the provider used and the
// resolved logf.
func sessionOptions(provider string, threads int, logf func(string, ...any)) (*ort.SessionOptions, string, string, func(string, ...any), error) {
	if err := ortenv.Init(""); err != nil {
		return nil, "", "", nil, err
	}
	if logf == nil {
		logf = log.Printf
	}
	so, used, note, err := ortenv.SessionOptionsFallback(provider, threads)
	if err != nil {
		return nil, "", "", nil, err
	}
	if note != "" {
		logf("llama: %s", note)
	}
	return so, used, note, logf, nil
}

// newModel picks the provider (falling back to the CPU), gets the graph for
// it from build, and creates the session.
func newModel(cfg arch.Config, opts Options, size int64, build buildFunc) (*Model, error) {
	m := &Model{session{cfg: cfg}}
	if err := m.open(opts, size, []string{InputIDs}, []string{OutputName}, build); err != nil {
		return nil, err
	}
	return m, nil
}

// buildFunc returns the graph for provider; with a non-nil sink the large
// weights go there (BuildOptions.External).
type buildFunc func(provider string, sink onnx.ExternalSink) ([]byte, error)

// externalFile is the name of the external weights file in its temporary
// folder.
const externalFile = "weights.bin"

// useExternal says whether opts store weights of size bytes externally.
func useExternal(opts Options, size int64) (bool, error) {
	switch opts.Weights {
	case WeightsAuto:
		return size >= AutoExternalBytes, nil
	case WeightsEmbedded:
		return false, nil
	case WeightsExternal:
		return true, nil
	}
	return false, fmt.Errorf("llama: unknown weights mode %q (want %q, %q or %q)", opts.Weights, WeightsAuto, WeightsEmbedded, WeightsExternal)
}

// open picks the provider (falling back to the CPU), gets the graph for it
// from build, and creates the session with inputs ins and outputs outs
// (size: the weights' float32 bytes, for WeightsAuto); it sets the provider
// used and the fallback note.
func (s *session) open(opts Options, size int64, ins, outs []string, build buildFunc) (err error) {
	external, err := useExternal(opts, size)
	if err != nil {
		return err
	}
	so, used, note, logf, err := sessionOptions(opts.Provider, opts.Threads, opts.Logf)
	if err != nil {
		return err
	}
	var sink *onnx.ExternalFile
	var dir string
	if external {
		// The weights go to a temporary folder that ONNX Runtime reads
		// through the session's external-initializers folder; it goes away
		// once the session exists (ONNX Runtime has read or mapped it),
		// and on any failure.
		dir, err = os.MkdirTemp(opts.TempDir, "nwc-weights-")
		if err != nil {
			so.Destroy()
			return fmt.Errorf("llama: external weights: %w", err)
		}
		defer func() {
			if sink != nil {
				sink.Close()
			}
			if err := os.RemoveAll(dir); err != nil && s.sess != nil {
				s.tmpDir = dir // removed by Close
			}
		}()
		if sink, err = onnx.CreateExternalFile(dir, externalFile); err != nil {
			so.Destroy()
			return err
		}
	}
	var data []byte
	if sink != nil {
		data, err = build(used, sink)
		if err == nil {
			err = sink.Close()
		}
	} else {
		data, err = build(used, nil)
	}
	if err != nil {
		so.Destroy()
		return err
	}
	create := func(so *ort.SessionOptions) (*ort.DynamicAdvancedSession, error) {
		if external {
			if err := ortenv.SetExternalDataFolder(so, dir); err != nil {
				return nil, err
			}
		}
		return ort.NewDynamicAdvancedSessionWithONNXData(data, ins, outs, so)
	}
	sess, err := create(so)
	so.Destroy()
	if err != nil && used != ortenv.ProviderCPU {
		// The provider was appended but the session could not use it.
		// (The graph was built for it: float16 weights stay float16.)
		note = fmt.Sprintf("%s session failed (%v); falling back to the CPU", used, err)
		logf("llama: %s", note)
		so, err2 := ortenv.SessionOptions(ortenv.ProviderCPU, opts.Threads)
		if err2 != nil {
			return err2
		}
		used = ortenv.ProviderCPU
		sess, err = create(so)
		so.Destroy()
	}
	// ONNX Runtime holds its own copy of the weights now: give the graph
	// bytes back to the OS.
	data = nil
	debug.FreeOSMemory()
	if err != nil {
		return fmt.Errorf("llama: onnx runtime session: %w", err)
	}
	s.provider, s.note, s.sess, s.external = used, note, sess, external
	return nil
}

// Config returns the model's hyper-parameters.
func (m *session) Config() arch.Config { return m.cfg }

// Vocab returns the vocabulary size (the logits' last dimension).
func (m *session) Vocab() int { return m.cfg.Vocab }

// Provider returns the execution provider in use ("cpu" or "cuda").
func (m *session) Provider() string { return m.provider }

// FallbackNote returns the message logged when the requested provider was
// unavailable ("" when none).
func (m *session) FallbackNote() string { return m.note }

// ErrClosed is returned by Logits and Cache.Forward after Close.
var ErrClosed = errors.New("llama: model closed")

// ErrSlidingWindow is returned by Logits and Cache.Forward for a sequence
// longer than the model's sliding attention window (arch.Config
// SlidingWindow): the graph attends to the whole sequence, which is what
// the model computes only up to its window.
var ErrSlidingWindow = errors.New("llama: sequence longer than the sliding_window")

// checkWindow refuses n positions beyond cfg's sliding window when the
// graph does not mask it (arch.Config.MasksWindow: Gemma-3's is masked).
func checkWindow(cfg arch.Config, n int) error {
	if cfg.SlidingWindow > 0 && !cfg.MasksWindow() && n > cfg.SlidingWindow {
		return fmt.Errorf("%w: %s attends to the last %d positions, the sequence has %d", ErrSlidingWindow, cfg.Arch, cfg.SlidingWindow, n)
	}
	return nil
}

// Logits runs the model on one sequence (positions 0..len(tokens)-1) and
// returns its logits, len(tokens) x Vocab() float32 in row-major order.
// Cancelling ctx terminates a run in progress.
func (m *Model) Logits(ctx context.Context, tokens []int32) ([]float32, error) {
	return m.LogitsBatch(ctx, [][]int32{tokens})
}

// LogitsInto is Logits writing into dst when cap(dst) suffices (eval reuses
// one buffer across windows: eval.BufferedLM).
func (m *Model) LogitsInto(ctx context.Context, tokens []int32, dst []float32) ([]float32, error) {
	return m.logitsBatch(ctx, [][]int32{tokens}, dst)
}

// LogitsBatch runs the model on equally long sequences at once and returns
// their logits, len(seqs) x len(seqs[0]) x Vocab() float32 in row-major
// order.
func (m *Model) LogitsBatch(ctx context.Context, seqs [][]int32) ([]float32, error) {
	return m.logitsBatch(ctx, seqs, nil)
}

func (m *Model) logitsBatch(ctx context.Context, seqs [][]int32, dst []float32) ([]float32, error) {
	if len(seqs) == 0 || len(seqs[0]) == 0 {
		return nil, fmt.Errorf("llama: no tokens")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	V := m.cfg.Vocab
	B, S := len(seqs), len(seqs[0])
	if err := checkWindow(m.cfg, S); err != nil {
		return nil, err
	}
	ids := make([]int64, 0, B*S)
	for b, seq := range seqs {
		if len(seq) != S {
			return nil, fmt.Errorf("llama: sequence %d has %d tokens, sequence 0 has %d", b, len(seq), S)
		}
		for i, t := range seq {
			if t < 0 || int(t) >= V {
				return nil, fmt.Errorf("llama: token %d at position %d outside the vocabulary [0, %d)", t, i, V)
			}
			ids = append(ids, int64(t))
		}
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.sess == nil {
		return nil, ErrClosed
	}
	in, err := ort.NewTensor(ort.NewShape(int64(B), int64(S)), ids)
	if err != nil {
		return nil, fmt.Errorf("llama: input tensor: %w", err)
	}
	defer in.Destroy()
	logits := dst[:0]
	if cap(logits) < B*S*V {
		logits = make([]float32, B*S*V)
	}
	logits = logits[:B*S*V]
	out, err := ort.NewTensor(ort.NewShape(int64(B), int64(S), int64(V)), logits)
	if err != nil {
		return nil, fmt.Errorf("llama: output tensor: %w", err)
	}
	defer out.Destroy()
	if err := runCancellable(ctx, m.sess, []ort.Value{in}, []ort.Value{out}, "run"); err != nil {
		return nil, err
	}
	return logits, nil
}

// runCancellable runs sess with run options that the end of ctx terminates
// (ortenv.Run); what names the run in errors.
func runCancellable(ctx context.Context, sess *ort.DynamicAdvancedSession, ins, outs []ort.Value, what string) error {
	return ortenv.RunCancellable(ctx, sess, ins, outs, "llama: "+what)
}

// Close releases the session. It waits for runs in progress.
func (m *session) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.sess == nil {
		return nil
	}
	err := m.sess.Destroy()
	m.sess = nil
	if m.tmpDir != "" {
		if err2 := os.RemoveAll(m.tmpDir); err2 != nil && err == nil {
			err = fmt.Errorf("llama: remove external weights: %w", err2)
		}
		m.tmpDir = ""
	}
	return err
}

// ExternalWeights says whether the weights reached ONNX Runtime as external
// data (Options.Weights) rather than inside the ONNX protobuf.
func (m *session) ExternalWeights() bool { return m.external }
