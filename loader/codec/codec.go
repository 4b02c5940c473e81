// Package codec is the contract between the .nwc container and the codecs
// that fill its sections, and the registry that ties them together, in the
// way image.RegisterFormat or archive/zip.RegisterDecompressor work: each
// codec lives in a package of its own (loader/codec/lossless, rtn, f16,
// gptq, ecsq, and the neural codec in ortcodec), which calls Register from
// its init function. Decoding a section is a table lookup on the codec id
// stored in the container's index; encoding looks a codec up by the name a
// user gives (`nwc compress --codec NAME`).
//
// A codec registers one Codec value per name. A value with NewDecoder
// decodes the sections carrying its ID; a value with NewEncoder can be
// chosen for compression. Several names may share a section format (gptq
// writes rtn sections), and a format may have no encoder of its own.
package codec

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strings"
	"sync"

	"github.com/nwc-project/nwc/loader/tensor"
)

// Section ids of the container (docs/FORMAT.md). Never renumber: they are
// stored in files.
const (
	IDRaw        uint8 = 0  // lossless: the stored bytes as they are
	IDZstd       uint8 = 1  // lossless: zstd of the stored bytes
	IDFloatSplit uint8 = 2  // lossless: exponent / sign+mantissa planes, zstd each
	IDBlockSplit uint8 = 3  // lossless: GGML block codes rANS-coded, fp16 fields float-split
	IDRTN        uint8 = 16 // round-to-nearest groups (rtn, gptq)
	IDECSQ       uint8 = 17 // entropy-coded scalar quantization
	IDF16        uint8 = 18 // float16 rounding
	IDNWC        uint8 = 20 // the neural codec (ortcodec)
)

// Errors shared by every codec; match them with errors.Is.
var (
	// ErrCorrupt: a payload or its parameters do not decode.
	ErrCorrupt = tensor.Kind("corrupt payload", tensor.ErrCorrupt)
	// ErrUnknownCodec: a section carries a codec id no registered codec
	// decodes, or a name no registered codec has.
	ErrUnknownCodec = tensor.Kind("unknown codec", tensor.ErrUnsupported)
	// ErrUnsupported: the codec exists but cannot run here (a dtype or shape
	// it does not take, or a build without ONNX Runtime for the neural codec).
	ErrUnsupported = tensor.Kind("unsupported by this codec", tensor.ErrUnsupported)
	// ErrCodecMismatch: a file was made with a trained codec other than the
	// one found under its name (content hash differs).
	ErrCodecMismatch = errors.New("codec mismatch")
)

// Section describes one section to decode: its index entry.
type Section struct {
	Name    string       // tensor or asset name, for error messages
	DType   tensor.DType // dtype of the decoded bytes
	Shape   []int64
	RawSize int64 // decoded bytes
	Params  []byte
}

// Decoder decodes the payloads of one codec id. It is built once per open
// file (NewDecoder) and must be safe for concurrent use.
type Decoder interface {
	// Decode returns the section's stored bytes (RawSize bytes of DType,
	// little endian), reusing dst when it is large enough.
	Decode(ctx context.Context, s Section, payload, dst []byte) ([]byte, error)
}

// Input is one tensor to encode.
type Input struct {
	Info tensor.Info
	// Raw holds the stored bytes (lossless codecs).
	Raw []byte
	// Weights holds the values of a [rows, cols] matrix, row-major (lossy
	// codecs, which only see transformer-block linears).
	Weights []float32
	// H is the cols x cols calibration matrix X^T X of the layer input
	// (row-major), or nil for the identity; set only for codecs that ask for
	// calibration.
	H []float64
}

// Output is one coded section.
type Output struct {
	ID      uint8
	DType   tensor.DType // dtype the section decodes to
	Params  []byte
	Payload []byte
}

// Encoder codes tensors for one compression run. It must be safe for
// concurrent use (Compress codes several tensors at once).
type Encoder interface {
	Encode(ctx context.Context, in Input) (Output, error)
}

// Env is what the host gives codecs: where trained codecs live and how to
// run ONNX Runtime. The zero value means the defaults.
type Env struct {
	// Codecs holds trained codec folders by name (nil: the default search,
	// see ortcodec.DefaultCodecs).
	Codecs fs.FS
	// Provider is the ONNX Runtime execution provider ("cpu", "cuda"; ""
	// means cpu). Threads is the intra-op thread count (0: ONNX Runtime's).
	Provider string
	Threads  int
	// Sessions is how many decoder sessions of each trained codec run
	// batches at once (0: the codec's default, one single-threaded session
	// per core on the CPU).
	Sessions int
	// Batch is the number of 16-value chunks the decoder network takes per
	// run (0: the codec's default). Larger batches amortize the per-run
	// overhead at the price of bigger session buffers.
	Batch int
	// HostORT: the host process created the ONNX Runtime environment; nwc
	// must neither initialize nor destroy it.
	HostORT bool
}

// Config configures an encoder.
type Config struct {
	Env
	// Arg is what follows ':' in the codec name ("nwc:NAME" gives "NAME").
	Arg string
	// Bits is the bit width or target bits/weight (meaning per codec).
	Bits float64
	// FeedbackBlock is the LDLQ error-feedback block in columns (0: the
	// codec's default).
	FeedbackBlock int
	// UniformLevels (nwc only; an ablation): every input column at quality
	// level 0, H still driving the error feedback. The default gives the
	// most important columns by diag(H) higher levels (Levels).
	UniformLevels bool
	// TuneRowScales (nwc and ecsq): after coding a matrix, replace each
	// row's fp16 scale with the one minimizing the row's proxy loss
	// (TuneRowScales), the closed-form row-scale tuning.
	TuneRowScales bool
}

// Codec describes one registered codec.
type Codec struct {
	// Name is what users type (`--codec NAME`); unique.
	Name string
	// ID is the section format the codec decodes (meaningful with
	// NewDecoder).
	ID uint8
	// Doc is one line for listings: what it is and what --bits means.
	Doc string
	// Lossy codecs code only the linear weights of transformer blocks (as
	// float32 Weights); every other tensor is kept losslessly. Lossless
	// codecs see every tensor's stored bytes.
	Lossy bool
	// Calibration: the encoder uses H (Input.H), so it is worth computing.
	Calibration bool
	// Takes lists the Config options beyond Bits the encoder honours;
	// Check refuses a Config that sets any other.
	Takes Options
	// NewEncoder starts a compression run (nil: decode only).
	NewEncoder func(Config) (Encoder, error)
	// NewDecoder builds the decoder for one open file (nil: the codec
	// writes another codec's sections).
	NewDecoder func(Env) (Decoder, error)
}

// Options is a set of optional Config settings a codec takes.
type Options uint8

const (
	TakesUniformLevels Options = 1 << iota // Config.UniformLevels
	TakesTuneRowScales                     // Config.TuneRowScales
)

// Check returns an error naming the codec and the option when cfg sets an
// option the codec does not take (an ablation flag silently ignored would
// make a run measure something else than it says).
func (c Codec) Check(cfg Config) error {
	for _, o := range []struct {
		set  bool
		opt  Options
		name string
	}{{cfg.UniformLevels, TakesUniformLevels, "uniform levels"}, {cfg.TuneRowScales, TakesTuneRowScales, "row-scale tuning"}} {
		if o.set && c.Takes&o.opt == 0 {
			return fmt.Errorf("codec %s does not take %s (%s)", c.Name, o.name, takers(o.opt))
		}
	}
	return nil
}

// takers names the registered codecs that take opt.
func takers(opt Options) string {
	var names []string
	for _, k := range List() {
		if k.Takes&opt != 0 && k.NewEncoder != nil {
			names = append(names, k.Name)
		}
	}
	if len(names) == 0 {
		return "no codec takes it"
	}
	return "codecs that do: " + strings.Join(names, ", ")
}

var (
	mu     sync.RWMutex
	byName = map[string]Codec{}
	byID   = map[uint8]Codec{}
)

// Register makes a codec available. It panics on a duplicate name or
// decoded id, or an empty name: those are programming errors found at init.
func Register(c Codec) {
	mu.Lock()
	defer mu.Unlock()
	if c.Name == "" || strings.ContainsAny(c.Name, ": ") {
		panic(fmt.Sprintf("codec: Register: bad name %q", c.Name))
	}
	if _, dup := byName[c.Name]; dup {
		panic("codec: Register called twice for " + c.Name)
	}
	if c.NewDecoder != nil {
		if old, dup := byID[c.ID]; dup {
			panic(fmt.Sprintf("codec: id %d registered by %s and %s", c.ID, old.Name, c.Name))
		}
		byID[c.ID] = c
	}
	byName[c.Name] = c
}

// Lookup returns the codec registered under name; "NAME:ARG" looks up NAME
// and returns ARG (for Config.Arg).
func Lookup(name string) (c Codec, arg string, err error) {
	base, arg, _ := strings.Cut(name, ":")
	mu.RLock()
	c, ok := byName[base]
	mu.RUnlock()
	if !ok || c.NewEncoder == nil {
		return Codec{}, "", fmt.Errorf("%w %q (available: %s)", ErrUnknownCodec, name, strings.Join(Names(), ", "))
	}
	return c, arg, nil
}

// ForID returns the codec that decodes sections with this id.
func ForID(id uint8) (Codec, bool) {
	mu.RLock()
	defer mu.RUnlock()
	c, ok := byID[id]
	return c, ok
}

// Name names a section id: the registered decoder's name, or "codec(N)".
func Name(id uint8) string {
	if c, ok := ForID(id); ok {
		return c.Name
	}
	return fmt.Sprintf("codec(%d)", id)
}

// List returns every registered codec, sorted by name.
func List() []Codec {
	mu.RLock()
	out := make([]Codec, 0, len(byName))
	for _, c := range byName {
		out = append(out, c)
	}
	mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Names lists the codecs that can encode, sorted.
func Names() []string {
	var out []string
	for _, c := range List() {
		if c.NewEncoder != nil {
			out = append(out, c.Name)
		}
	}
	return out
}

// Decoders builds decoders on demand, one per codec id, for one open file.
// Safe for concurrent use.
type Decoders struct {
	env Env
	mu  sync.Mutex
	dec map[uint8]Decoder
}

// NewDecoders returns an empty decoder table for env.
func NewDecoders(env Env) *Decoders { return &Decoders{env: env, dec: map[uint8]Decoder{}} }

// Decode decodes a section payload with the codec its id names.
func (d *Decoders) Decode(ctx context.Context, id uint8, s Section, payload, dst []byte) ([]byte, error) {
	dec, err := d.get(id)
	if err != nil {
		return nil, err
	}
	return dec.Decode(ctx, s, payload, dst)
}

// TransposedDecoder is implemented by decoders that can write the transpose
// W^T [n, m] of a 2-D F32 section W [m, n] directly, more cheaply than
// decoding W and transposing it (the nwc decoder: its chunks are runs of
// W's columns). dst is reused when it holds m*n values.
type TransposedDecoder interface {
	DecodeTransposed(ctx context.Context, s Section, payload []byte, dst []float32) ([]float32, error)
}

// DecodeTransposed decodes a 2-D section into its transpose when the
// decoder of id implements TransposedDecoder; ok is false (and nothing is
// decoded) when it does not.
func (d *Decoders) DecodeTransposed(ctx context.Context, id uint8, s Section, payload []byte, dst []float32) (v []float32, ok bool, err error) {
	dec, err := d.get(id)
	if err != nil {
		return nil, false, err
	}
	td, ok := dec.(TransposedDecoder)
	if !ok || len(s.Shape) != 2 {
		return nil, false, nil
	}
	v, err = td.DecodeTransposed(ctx, s, payload, dst)
	return v, true, err
}

func (d *Decoders) get(id uint8) (Decoder, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if dec, ok := d.dec[id]; ok {
		return dec, nil
	}
	c, ok := ForID(id)
	if !ok {
		var known []string
		for _, c := range List() {
			if c.NewDecoder != nil {
				known = append(known, fmt.Sprintf("%s (%d)", c.Name, c.ID))
			}
		}
		return nil, fmt.Errorf("%w: id %d (this build decodes %s)", ErrUnknownCodec, id, strings.Join(known, ", "))
	}
	dec, err := c.NewDecoder(d.env)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.Name, err)
	}
	d.dec[id] = dec
	return dec, nil
}

// Close closes the decoders that hold resources (those with a Close method).
func (d *Decoders) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	for _, dec := range d.dec {
		if c, ok := dec.(interface{ Close() error }); ok {
			errs = append(errs, c.Close())
		}
	}
	d.dec = map[uint8]Decoder{}
	return errors.Join(errs...)
}

// CloseEncoder closes an encoder when it holds resources.
func CloseEncoder(e Encoder) error {
	if c, ok := e.(interface{ Close() error }); ok {
		return c.Close()
	}
	return nil
}

// MatrixDims views a shape as [rows, cols] (rows = product of all but the
// last dimension), refusing empty and implausibly large shapes.
func MatrixDims(shape []int64) (rows, cols int, err error) {
	if len(shape) < 1 {
		return 0, 0, fmt.Errorf("%w: a scalar cannot be a matrix", ErrCorrupt)
	}
	n := tensor.NumElements(shape)
	c := shape[len(shape)-1]
	if n <= 0 || c <= 0 || n > 1<<34 {
		return 0, 0, fmt.Errorf("%w: shape %v", ErrCorrupt, shape)
	}
	return int(n / c), int(c), nil
}

// CheckF32 refuses a lossy section whose declared dtype is not F32 (every
// lossy codec decodes to float32).
func CheckF32(c string, s Section) error {
	if s.DType != tensor.F32 {
		return fmt.Errorf("%w: %s section with dtype %s", ErrCorrupt, c, s.DType)
	}
	if want := 4 * tensor.NumElements(s.Shape); s.RawSize != want {
		return fmt.Errorf("%w: %s section of %d bytes for shape %v", ErrCorrupt, c, s.RawSize, s.Shape)
	}
	return nil
}
