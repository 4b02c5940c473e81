//go:build cgo

package ortcodec

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
	"sync"
	"sync/atomic"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/nwc-project/nwc/internal/ortenv"
	"github.com/nwc-project/nwc/loader/stage"
	"github.com/nwc-project/nwc/ortcodec/entropy"
)

// Codec is a loaded codec. Its methods are safe for concurrent use; Close
// waits for running calls to finish.
type Codec struct {
	dir  string
	opts options
	card json.RawMessage
	// latentModel: the per-level tables, their medians (the dequantization
	// offsets) and, for a KindGain codec, its constants (Encode and Decode
	// then run in Go, without ONNX Runtime sessions).
	*latentModel

	mu     sync.RWMutex // held shared by Encode/Decode, exclusively by Close
	closed bool
	enc    *pool
	dec    *pool
}

// Load opens the codec folder name in fsys (models.FS, os.DirFS(dir), or
// DefaultCodecs()). It initializes ONNX Runtime through ortenv (or, with
// WithHostEnvironment, uses the host's), checks the IO of the networks,
// loads the entropy tables and the card, and creates the session pools from
// the ONNX bytes. On error everything built so far is released.
func Load(fsys fs.FS, name string, opts ...Option) (c *Codec, err error) {
	o := defaultOptions()
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	o.resolve()
	c = &Codec{dir: name, opts: o}
	built := c // c is nil by the time a failing return runs the defer
	defer func() {
		if err != nil {
			err = errors.Join(err, built.Close())
			c = nil
		}
	}()
	read := func(f string) ([]byte, error) {
		b, err := fs.ReadFile(fsys, path.Join(name, f))
		if err != nil {
			return nil, fmt.Errorf("%w: codec %s: %v", ErrModel, name, err)
		}
		return b, nil
	}
	lm, err := loadLatentModel(fsys, name)
	if err != nil {
		return nil, err
	}
	c.latentModel = lm
	if c.gain != nil && !o.forceORT {
		return c, nil // no network: nothing for ONNX Runtime to run
	}
	switch {
	case o.host:
		err = ortenv.InitHost()
	case o.library == "":
		err = ortenv.InitProvider(o.provider) // the GPU build of ONNX Runtime for "cuda"
	default:
		err = ortenv.Init(o.library)
	}
	if err != nil {
		return nil, fmt.Errorf("ortcodec: %w", err)
	}
	so, err := ortenv.SessionOptions(o.provider, o.threads)
	if err != nil {
		return nil, fmt.Errorf("ortcodec: %s: provider %s: %w", name, o.provider, err)
	}
	defer so.Destroy()
	if !o.decodeOnly {
		onnx, err := read(EncoderFile)
		if err != nil {
			return nil, err
		}
		if err := checkIO(path.Join(name, EncoderFile), onnx, "x", "y"); err != nil {
			return nil, err
		}
		if c.enc, err = newPool(path.Join(name, EncoderFile), onnx, "x", "y", so, o); err != nil {
			return nil, err
		}
	}
	onnx, err := read(DecoderFile)
	if err != nil {
		return nil, err
	}
	if err := checkIO(path.Join(name, DecoderFile), onnx, "y_hat", "x_hat"); err != nil {
		return nil, err
	}
	if c.dec, err = newPool(path.Join(name, DecoderFile), onnx, "y_hat", "x_hat", so, o); err != nil {
		return nil, err
	}
	return c, nil
}

// Name returns the codec folder's name.
func (c *Codec) Name() string { return c.dir }

// Provider returns the execution provider in use ("cpu" or "cuda").
func (c *Codec) Provider() string { return c.opts.provider }

// Tables returns all rows of entropy.json (16 channels, or 64 for per-level
// tables); LevelTables gives the 16 rows of one quality level.
func (c *Codec) Tables() *entropy.Tables { return c.tables }

// LevelTables returns the entropy tables (16 channels) of quality level q.
func (c *Codec) LevelTables(q int) *entropy.Tables { return c.levels[q] }

// Encode runs the encoder on x (N*16 values, chunk-major) with quality levels
// q (N values in 0..3) and returns the latents y (N*16, not rounded).
func (c *Codec) Encode(ctx context.Context, x []float32, q []int64) ([]float32, error) {
	if c.gain != nil && c.enc == nil {
		return c.native(ctx, "encode", c.gain.encode, x, q)
	}
	return c.run(ctx, c.encPool, "encode", x, q)
}

// Decode runs the decoder on dequantized latents yhat (N*16) with quality
// levels q (N values in 0..3) and returns the chunks xhat (N*16).
func (c *Codec) Decode(ctx context.Context, yhat []float32, q []int64) ([]float32, error) {
	if c.gain != nil && c.dec == nil {
		return c.native(ctx, "decode", c.gain.decode, yhat, q)
	}
	return c.run(ctx, c.decPool, "decode", yhat, q)
}

// Kind returns the codec's architecture kind (KindMLP or KindGain).
func (c *Codec) Kind() string {
	if c.gain != nil {
		return KindGain
	}
	return KindMLP
}

// native runs a KindGain transform in Go, with the checks of run.
func (c *Codec) native(ctx context.Context, op string, f func(in []float32, q []int64, out []float32), in []float32, q []int64) ([]float32, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if err := c.ready(ctx, op, in, q); err != nil {
		return nil, err
	}
	out := make([]float32, len(in))
	f(in, q, out)
	return out, nil
}

// ready checks the arguments of Encode / Decode and that the codec is open
// (c.mu held).
func (c *Codec) ready(ctx context.Context, op string, in []float32, q []int64) error {
	if len(in) != D*len(q) {
		return fmt.Errorf("ortcodec: %s: %w: %d values for %d levels (want %d per chunk)", op, ErrInput, len(in), len(q), D)
	}
	for i, v := range q {
		if v < 0 || v >= NumLevels {
			return fmt.Errorf("ortcodec: %s: %w: level %d of chunk %d outside 0..%d", op, ErrInput, v, i, NumLevels-1)
		}
	}
	if c.closed {
		return ErrClosed
	}
	return ctx.Err()
}

func (c *Codec) encPool() *pool { return c.enc }
func (c *Codec) decPool() *pool { return c.dec }

func (c *Codec) run(ctx context.Context, which func() *pool, op string, in []float32, q []int64) ([]float32, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if err := c.ready(ctx, op, in, q); err != nil {
		return nil, err
	}
	p := which()
	if p == nil {
		return nil, fmt.Errorf("ortcodec: %s: %w: codec %s was loaded for decoding only", op, ErrInput, c.dir)
	}
	out := make([]float32, len(in))
	n := len(q)
	batch := c.opts.batch
	nb := (n + batch - 1) / batch
	workers := min(nb, cap(p.free))
	if workers <= 1 {
		for b := 0; b < nb; b++ {
			if err := p.runBatch(ctx, in, q, out, b*batch, min(n, (b+1)*batch)); err != nil {
				return nil, fmt.Errorf("ortcodec: %s: %w", op, err)
			}
		}
		return out, nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		next  int
	)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				b := next
				next++
				stop := first != nil
				mu.Unlock()
				if stop || b >= nb {
					return
				}
				if err := p.runBatch(ctx, in, q, out, b*batch, min(n, (b+1)*batch)); err != nil {
					mu.Lock()
					if first == nil {
						first = err
						cancel()
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return nil, fmt.Errorf("ortcodec: %s: %w", op, first)
	}
	return out, nil
}

// Close releases all sessions and tensors. It waits for running Encode and
// Decode calls, is idempotent, and is safe on a partly built Codec.
func (c *Codec) Close() error {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	var errs []error
	if c.enc != nil {
		errs = append(errs, c.enc.destroy())
	}
	if c.dec != nil {
		errs = append(errs, c.dec.destroy())
	}
	return errors.Join(errs...)
}

// checkIO verifies that the model has inputs (in: float32 [N,16], q: int64
// [N]) and output (out: float32 [N,16]) with a dynamic N, in any order, and
// nothing else.
func checkIO(path string, onnx []byte, in, out string) error {
	ins, outs, err := ort.GetInputOutputInfoWithONNXData(onnx)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrModel, path, err)
	}
	type want struct {
		name string
		dt   ort.TensorElementDataType
		rank int
	}
	check := func(kind string, got []ort.InputOutputInfo, ws []want) error {
		ok := len(got) == len(ws)
		for _, w := range ws {
			found := false
			for _, g := range got {
				if g.Name != w.name {
					continue
				}
				found = g.OrtValueType == ort.ONNXTypeTensor && g.DataType == w.dt && len(g.Dimensions) == w.rank &&
					g.Dimensions[0] <= 0 && (w.rank == 1 || g.Dimensions[1] == D)
			}
			ok = ok && found
		}
		if ok {
			return nil
		}
		wantS := ""
		for i, w := range ws {
			if i > 0 {
				wantS += ", "
			}
			wantS += w.name + " " + dtName(w.dt) + " [N"
			if w.rank == 2 {
				wantS += fmt.Sprintf(",%d", D)
			}
			wantS += "]"
		}
		return fmt.Errorf("%w: %s: %s are %s, want %s (N dynamic)", ErrModel, path, kind, describe(got), wantS)
	}
	f32 := ort.TensorElementDataType(ort.TensorElementDataTypeFloat)
	i64 := ort.TensorElementDataType(ort.TensorElementDataTypeInt64)
	if err := check("inputs", ins, []want{{in, f32, 2}, {"q", i64, 1}}); err != nil {
		return err
	}
	return check("outputs", outs, []want{{out, f32, 2}})
}

func describe(infos []ort.InputOutputInfo) string {
	if len(infos) == 0 {
		return "(none)"
	}
	s := ""
	for i, g := range infos {
		if i > 0 {
			s += ", "
		}
		if g.OrtValueType != ort.ONNXTypeTensor {
			s += fmt.Sprintf("%s %s", g.Name, g.OrtValueType)
			continue
		}
		s += fmt.Sprintf("%s %s %s", g.Name, dtName(g.DataType), g.Dimensions)
	}
	return s
}

func dtName(dt ort.TensorElementDataType) string {
	switch dt {
	case ort.TensorElementDataTypeFloat:
		return "float32"
	case ort.TensorElementDataTypeInt64:
		return "int64"
	}
	return strings.ToLower(strings.TrimPrefix(dt.String(), "ONNX_TENSOR_ELEMENT_DATA_TYPE_"))
}

// pool is a fixed set of sessions of one network; free is the semaphore.
type pool struct {
	free chan *session
	all  []*session
}

// session is one ONNX Runtime session with its own preallocated full-batch
// tensors and run options.
type session struct {
	s     *ort.DynamicAdvancedSession
	in    *ort.Tensor[float32] // [batch, 16]
	q     *ort.Tensor[int64]   // [batch]
	out   *ort.Tensor[float32] // [batch, 16]
	ropts *ort.RunOptions
}

func newPool(path string, onnx []byte, in, out string, so *ort.SessionOptions, o options) (*pool, error) {
	p := &pool{free: make(chan *session, o.sessions)}
	for i := 0; i < o.sessions; i++ {
		s, err := newSession(onnx, in, out, so, o.batch)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("ortcodec: %s: session %d: %w", path, i, err), p.destroy())
		}
		p.all = append(p.all, s)
		p.free <- s
	}
	return p, nil
}

func newSession(onnx []byte, in, out string, so *ort.SessionOptions, batch int) (s *session, err error) {
	s = &session{}
	defer func() {
		if err != nil {
			err = errors.Join(err, s.destroy())
			s = nil
		}
	}()
	if s.in, err = ort.NewEmptyTensor[float32](ort.NewShape(int64(batch), D)); err != nil {
		return nil, err
	}
	liveObjects.Add(1)
	if s.q, err = ort.NewEmptyTensor[int64](ort.NewShape(int64(batch))); err != nil {
		return nil, err
	}
	liveObjects.Add(1)
	if s.out, err = ort.NewEmptyTensor[float32](ort.NewShape(int64(batch), D)); err != nil {
		return nil, err
	}
	liveObjects.Add(1)
	if s.ropts, err = ort.NewRunOptions(); err != nil {
		return nil, err
	}
	liveObjects.Add(1)
	if s.s, err = ort.NewDynamicAdvancedSessionWithONNXData(onnx, []string{in, "q"}, []string{out}, so); err != nil {
		return nil, err
	}
	liveObjects.Add(1)
	return s, nil
}

func (s *session) destroy() error {
	var errs []error
	if s.s != nil {
		errs = append(errs, s.s.Destroy())
		s.s = nil
		liveObjects.Add(-1)
	}
	if s.in != nil {
		errs = append(errs, s.in.Destroy())
		s.in = nil
		liveObjects.Add(-1)
	}
	if s.q != nil {
		errs = append(errs, s.q.Destroy())
		s.q = nil
		liveObjects.Add(-1)
	}
	if s.out != nil {
		errs = append(errs, s.out.Destroy())
		s.out = nil
		liveObjects.Add(-1)
	}
	if s.ropts != nil {
		errs = append(errs, s.ropts.Destroy())
		s.ropts = nil
		liveObjects.Add(-1)
	}
	return errors.Join(errs...)
}

func (p *pool) destroy() error {
	if p == nil {
		return nil
	}
	var errs []error
	for _, s := range p.all {
		errs = append(errs, s.destroy())
	}
	p.all = nil
	return errors.Join(errs...)
}

// runBatch runs chunks [lo, hi) of in/q into out on a free session.
func (p *pool) runBatch(ctx context.Context, in []float32, q []int64, out []float32, lo, hi int) error {
	return p.runWith(ctx, lo, hi, nil,
		func(sin []float32, sq []int64) {
			copy(sin, in[lo*D:hi*D])
			copy(sq, q[lo:hi])
		},
		func(sout []float32) { copy(out[lo*D:hi*D], sout[:(hi-lo)*D]) })
}

// runWith runs hi-lo chunks through a free session: fill writes the inputs
// into the session's own tensors (the first hi-lo chunks), the network
// runs, drain reads the outputs from the session's output tensor. Only the
// network run is timed (stage.Network in st; fill and drain time
// themselves). lo and hi only name the chunks in errors.
func (p *pool) runWith(ctx context.Context, lo, hi int, st *stage.Times, fill func(in []float32, q []int64), drain func(out []float32)) (err error) {
	var s *session
	select {
	case s = <-p.free:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { p.free <- s }()
	m := hi - lo
	fill(s.in.GetData()[:m*D], s.q.GetData()[:m])
	inT, qT, outT := s.in, s.q, s.out
	if m*D != len(s.in.GetData()) {
		// Partial batch: tensors of the exact shape over the same buffers.
		if inT, err = newTempTensor(ort.NewShape(int64(m), D), s.in.GetData()); err != nil {
			return err
		}
		defer destroyTemp(inT, &err)
		if qT, err = newTempTensor(ort.NewShape(int64(m)), s.q.GetData()); err != nil {
			return err
		}
		defer destroyTemp(qT, &err)
		if outT, err = newTempTensor(ort.NewShape(int64(m), D), s.out.GetData()); err != nil {
			return err
		}
		defer destroyTemp(outT, &err)
	}
	t0 := st.Start()
	if err := ortenv.Run(ctx, s.s, []ort.Value{inT, qT}, []ort.Value{outT}, s.ropts); err != nil {
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return err
		}
		return fmt.Errorf("chunks %d..%d: %w", lo, hi, err)
	}
	st.Since(stage.Network, t0, int64(m*D))
	drain(s.out.GetData()[:m*D])
	return nil
}

// liveObjects counts the ORT objects (tensors, run options, sessions) this
// package has created and not yet destroyed; tests require 0 at exit.
var liveObjects atomic.Int64

func newTempTensor[T float32 | int64](shape ort.Shape, data []T) (*ort.Tensor[T], error) {
	t, err := ort.NewTensor(shape, data)
	if err == nil {
		liveObjects.Add(1)
	}
	return t, err
}

func destroyTemp(t interface{ Destroy() error }, err *error) {
	*err = errors.Join(*err, t.Destroy())
	liveObjects.Add(-1)
}
