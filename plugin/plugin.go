// Package plugin is nwc's public Go API: what a Go program (an LLM server, a
// converter, a test) imports to open a compressed model the way it opens its
// usual weights. A model opens from a path, an io.ReaderAt or an fs.FS, in
// any format nwc reads (.nwc, GGUF, safetensors); its tensors come out
// decoded, as float32, float16 or bfloat16, one ReadTensor call each, while
// the next ones decode in the background.
//
//	m, err := plugin.Open(ctx, "model.nwc")
//	if err != nil { ... }
//	defer m.Close()
//	for _, t := range m.Tensors() {
//		buf, err = m.ReadTensor(ctx, t.Name, plugin.F16, buf)
//		...
//	}
//
// Neural-coded tensors decode through ONNX Runtime (package ortcodec). A
// program built without cgo still reads lossless, rtn, gptq, ecsq and f16
// files; a neural-coded tensor then gives an error wrapping ErrUnsupported
// that says ONNX Runtime is needed. The trained codecs nwc ships are
// embedded in the program (package models); WithCodecs points at others.
//
// ONNX Runtime allows one environment per process. By default nwc creates it
// on first use (library from $ONNXRUNTIME_SHARED_LIBRARY_PATH or the nwc
// cache) and never destroys it. A host that created the environment itself
// (hugot, its own onnxruntime_go sessions) passes WithHostEnvironment: nwc
// then neither initializes nor destroys it.
package plugin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sync"

	"github.com/nwc-project/nwc/internal/ortenv"
	"github.com/nwc-project/nwc/loader"
	"github.com/nwc-project/nwc/loader/arch"
	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/container"
	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/loader/tokjson"
	"github.com/nwc-project/nwc/plugin/chat"
)

// Types re-exported so that a host needs no other nwc import.
type (
	// TensorInfo describes one tensor: name, stored dtype, shape, bytes.
	TensorInfo = tensor.Info
	// DType is a tensor element type.
	DType = tensor.DType
	// Config holds a decoder-only transformer's hyper-parameters.
	Config = arch.Config
	// ChatMessage is one turn of a conversation (role, content).
	ChatMessage = chat.Message
	// ChatTemplate is a model's compiled chat template (Render).
	ChatTemplate = chat.Template
)

// Output dtypes of ReadTensor.
const (
	F32  = tensor.F32
	F16  = tensor.F16
	BF16 = tensor.BF16
)

// Errors to match with errors.Is; every error nwc returns for a bad file
// wraps one of them and names the file (and tensor).
var (
	// ErrChecksum: stored bytes do not match their checksum.
	ErrChecksum = container.ErrChecksum
	// ErrCorrupt: a file or section is malformed or truncated (includes
	// ErrChecksum).
	ErrCorrupt = tensor.ErrCorrupt
	// ErrCodecMismatch: the trained codec found under the name a file
	// records is not the one it was made with.
	ErrCodecMismatch = codec.ErrCodecMismatch
	// ErrUnsupported: well formed but not readable by this build: unknown
	// format version, codec or dtype, or a neural codec without ONNX
	// Runtime.
	ErrUnsupported = tensor.ErrUnsupported
	// ErrNotFound: no tensor of that name.
	ErrNotFound = tensor.ErrNotFound
	// ErrNoTokenizer: the model carries no tokenizer.
	ErrNoTokenizer = tokjson.ErrNoTokenizer
	// ErrNoChatTemplate: the model carries no chat template.
	ErrNoChatTemplate = chat.ErrNoTemplate
	// ErrClosed: the Model was closed.
	ErrClosed = errors.New("nwc: model is closed")
)

// Option configures Open. Options are checked when Open runs; an invalid
// one makes Open fail.
type Option func(*options) error

type options struct {
	env      codec.Env
	prefetch int // -1: default
	name     string
}

// WithCodecs looks trained codecs up in fsys (folders by name: encoder.onnx,
// decoder.onnx, entropy.json, card.json) instead of $NWC_CODECS and the
// shipped ones.
func WithCodecs(fsys fs.FS) Option {
	return func(o *options) error {
		if fsys == nil {
			return errors.New("nwc: WithCodecs(nil)")
		}
		o.env.Codecs = fsys
		return nil
	}
}

// WithProvider selects the ONNX Runtime execution provider for neural
// decoding: "cpu" (default) or "cuda".
func WithProvider(p string) Option {
	return func(o *options) error {
		n, err := ortenv.NormalizeProvider(p)
		if err != nil {
			return fmt.Errorf("nwc: %w", err)
		}
		o.env.Provider = n
		return nil
	}
}

// WithThreads sets ONNX Runtime's intra-op threads per decoder session
// (0: the default, 1 thread per session and one session per core; see
// WithDecodeSessions).
func WithThreads(n int) Option {
	return func(o *options) error {
		if n < 0 || n > 4096 {
			return fmt.Errorf("nwc: threads %d outside [0, 4096]", n)
		}
		o.env.Threads = n
		return nil
	}
}

// WithDecodeSessions sets how many decoder network sessions of each trained
// codec run batches at once (0: the default, one per core on the CPU
// divided by WithThreads, 2 on CUDA). nwc bench decode --sweep measures the
// choices.
func WithDecodeSessions(n int) Option {
	return func(o *options) error {
		if n < 0 || n > 256 {
			return fmt.Errorf("nwc: decode sessions %d outside [0, 256]", n)
		}
		o.env.Sessions = n
		return nil
	}
}

// WithPrefetch sets how many tensors of a .nwc file decode ahead of the
// reader, in file order (0: none, decode on demand; default: up to 4).
// Memory: at most that many decoded tensors beyond the caller's.
func WithPrefetch(n int) Option {
	return func(o *options) error {
		if n < 0 || n > 256 {
			return fmt.Errorf("nwc: prefetch %d outside [0, 256]", n)
		}
		o.prefetch = n
		return nil
	}
}

// WithHostEnvironment uses the ONNX Runtime environment the host already
// created: nwc neither initializes nor destroys it (decoding fails with a
// clear error when there is none).
func WithHostEnvironment() Option {
	return func(o *options) error {
		o.env.HostORT = true
		return nil
	}
}

// WithName names a model opened from an io.ReaderAt in errors.
func WithName(name string) Option {
	return func(o *options) error {
		o.name = name
		return nil
	}
}

// Model is an open model. Its methods are safe for concurrent use.
type Model struct {
	// mu is held shared by every read and exclusively by Close, so Close
	// waits for reads in flight and no read runs on a closed source.
	mu     sync.RWMutex
	closed bool
	infos  []tensor.Info

	src    tensor.Source
	nwc    *loader.NWCFile
	pf     *loader.Prefetcher
	format string
	closer io.Closer
}

// open takes m.mu shared; it fails with ErrClosed once Close ran. The
// caller releases with m.mu.RUnlock.
func (m *Model) open() error {
	m.mu.RLock()
	if m.closed {
		m.mu.RUnlock()
		return ErrClosed
	}
	return nil
}

func build(opts []Option) (options, error) {
	o := options{prefetch: -1}
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			return o, err
		}
	}
	return o, nil
}

// Open opens the model at path (a .nwc, GGUF or safetensors file, a
// safetensors folder, or a reference model name from `nwc models`).
func Open(ctx context.Context, path string, opts ...Option) (*Model, error) {
	o, err := build(opts)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	src, format, err := loader.Open(path, o.env)
	if err != nil {
		return nil, err
	}
	return newModel(ctx, src, string(format), nil, o), nil
}

// OpenReaderAt opens a model held in r (size bytes): a .nwc container, a
// GGUF file or a single safetensors file. Close does not close r.
func OpenReaderAt(ctx context.Context, r io.ReaderAt, size int64, opts ...Option) (*Model, error) {
	o, err := build(opts)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if o.name == "" {
		o.name = "model"
	}
	src, format, err := loader.OpenReaderAt(r, size, o.name, o.env)
	if err != nil {
		return nil, err
	}
	return newModel(ctx, src, string(format), nil, o), nil
}

// OpenFS opens the model file name in fsys (an embed.FS, os.DirFS, a zip
// reader...). The file is read through io.ReaderAt when it has one, else
// read into memory.
func OpenFS(ctx context.Context, fsys fs.FS, name string, opts ...Option) (*Model, error) {
	o, err := build(opts)
	if err != nil {
		return nil, err
	}
	f, err := fsys.Open(name)
	if err != nil {
		return nil, fmt.Errorf("nwc: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("nwc: %s: %w", name, err)
	}
	if st.IsDir() {
		f.Close()
		return nil, fmt.Errorf("nwc: %s is a folder; open a model file", name)
	}
	if o.name == "" {
		o.name = path.Clean(name)
	}
	ra, ok := f.(io.ReaderAt)
	if !ok {
		data, err := io.ReadAll(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("nwc: %s: %w", name, err)
		}
		ra, f = bytes.NewReader(data), nil
	}
	src, format, err := loader.OpenReaderAt(ra, st.Size(), o.name, o.env)
	if err != nil {
		if f != nil {
			f.Close()
		}
		return nil, err
	}
	return newModel(ctx, src, string(format), f, o), nil
}

func newModel(ctx context.Context, src tensor.Source, format string, closer io.Closer, o options) *Model {
	m := &Model{src: src, format: format, closer: closer, infos: src.Tensors()}
	m.nwc, _ = src.(*loader.NWCFile)
	if m.nwc != nil && o.prefetch != 0 {
		ahead := o.prefetch
		if ahead < 0 {
			ahead = 0 // loader's default
		}
		m.pf = loader.Prefetch(context.WithoutCancel(ctx), m.nwc, false, loader.PrefetchOptions{Ahead: ahead})
	}
	return m
}

// Format is the model's file format: "nwc", "gguf" or "safetensors".
func (m *Model) Format() string { return m.format }

// Tensors lists the tensors in storage order, with their stored dtypes
// (lossy-coded tensors are F32).
func (m *Model) Tensors() []TensorInfo { return m.infos }

// ReadTensor decodes the named tensor and converts it to dt (F32, F16 or
// BF16), into dst when it is large enough; the bytes are little endian.
// Cancelling ctx stops a neural decode between batches.
func (m *Model) ReadTensor(ctx context.Context, name string, dt DType, dst []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := m.open(); err != nil {
		return nil, err
	}
	defer m.mu.RUnlock()
	ti, ok := tensor.Find(m.src.Tensors(), name)
	if !ok {
		return nil, fmt.Errorf("nwc: tensor %q: %w", name, ErrNotFound)
	}
	if dt != F32 && dt != F16 && dt != BF16 {
		return nil, fmt.Errorf("nwc: tensor %q: %w: cannot convert to %s (F32, F16 or BF16)", name, tensor.ErrUnsupportedDType, dt)
	}
	// Stored in the dtype asked for: decode straight into dst, no copy.
	var into []byte
	if dt == ti.DType {
		into = dst
	}
	var raw []byte
	var err error
	switch {
	case m.pf != nil:
		raw, err = m.pf.ReadTensor(ctx, name, into)
	case m.nwc != nil:
		raw, err = m.nwc.ReadTensor(ctx, name, into)
	default:
		raw, err = m.src.ReadRaw(name, into)
	}
	if err != nil {
		return nil, err
	}
	if dt == ti.DType {
		if want, err := dt.StorageBytes(ti.NumElements()); err != nil || int64(len(raw)) != want {
			return nil, fmt.Errorf("nwc: tensor %q: %w: %d bytes for %d %s elements", name, tensor.ErrShape, len(raw), ti.NumElements(), dt)
		}
		return raw, nil
	}
	out, err := tensor.Convert(ti.DType, raw, ti.NumElements(), dt, dst)
	if err != nil {
		return nil, fmt.Errorf("nwc: tensor %q: %w", name, err)
	}
	return out, nil
}

// Config returns the model's architecture hyper-parameters, from its GGUF
// metadata or its config.json.
func (m *Model) Config() (Config, error) {
	if err := m.open(); err != nil {
		return Config{}, err
	}
	defer m.mu.RUnlock()
	return arch.ConfigFromSource(m.src)
}

// TokenizerJSON returns the model's tokenizer as a Hugging Face
// tokenizer.json: the file the model carries, or one built from its GGUF
// metadata.
func (m *Model) TokenizerJSON() ([]byte, error) {
	if err := m.open(); err != nil {
		return nil, err
	}
	defer m.mu.RUnlock()
	b, _, err := tokjson.JSONForSource(m.src)
	return b, err
}

// ChatTemplate returns the model's chat template (GGUF
// tokenizer.chat_template, or tokenizer_config.json's chat_template),
// rendered in Go (package plugin/chat). Generation itself runs in
// plugin/llama: llama.OpenDecoderSource(m.Source(), ...) and
// Decoder.Generate (docs/RUNTIME.md, "Generation").
func (m *Model) ChatTemplate() (*ChatTemplate, error) {
	if err := m.open(); err != nil {
		return nil, err
	}
	defer m.mu.RUnlock()
	return chat.FromSource(m.src)
}

// StopTokens returns the model's end-of-sequence token ids (GGUF
// tokenizer.ggml.eos_token_id, or eos_token_id of generation_config.json /
// config.json): where generation stops.
func (m *Model) StopTokens() ([]int32, error) {
	if err := m.open(); err != nil {
		return nil, err
	}
	defer m.mu.RUnlock()
	return chat.StopTokens(m.src)
}

// Source returns the model as a tensor.Source (for nwc's own runtime and
// writers). Reads through it bypass the prefetcher and the Close guard: do
// not use it after Close (it is nil then).
func (m *Model) Source() tensor.Source { return m.src }

// Close stops background decoding and releases the file and the codecs. It
// waits for reads in flight; later reads fail with ErrClosed. Closing twice
// is harmless.
func (m *Model) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	var errs []error
	if m.pf != nil {
		errs = append(errs, m.pf.Close())
		m.pf = nil
	}
	if m.src != nil {
		errs = append(errs, m.src.Close())
		m.src = nil
	}
	if m.closer != nil {
		errs = append(errs, m.closer.Close())
		m.closer = nil
	}
	return errors.Join(errs...)
}
