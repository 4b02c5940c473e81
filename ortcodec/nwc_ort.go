//go:build cgo

package ortcodec

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"

	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/ortcodec/ldlq"
)

// loadOptions turns the host's Env into Load options.
func loadOptions(env codec.Env) []Option {
	opts := []Option{WithThreads(env.Threads)}
	if env.Provider != "" {
		opts = append(opts, WithProvider(env.Provider))
	}
	if env.Sessions > 0 {
		opts = append(opts, WithSessions(env.Sessions))
	}
	if env.Batch > 0 {
		opts = append(opts, WithBatch(env.Batch))
	}
	if env.HostORT {
		opts = append(opts, WithHostEnvironment())
	}
	return opts
}

// encoder codes block linears with one trained codec.
type encoder struct {
	id      Identity
	c       *Codec
	block   int  // LDLQ feedback block
	uniform bool // every column at level 0 (codec.Config.UniformLevels)
	tune    bool // closed-form row-scale tuning (codec.Config.TuneRowScales)
}

// newEncoder loads the codec pickCodec names (a codec, or the member of a
// family closest to cfg.Bits).
func newEncoder(cfg codec.Config) (codec.Encoder, error) {
	block := cfg.FeedbackBlock
	if block == 0 {
		block = ldlq.FeedbackBlock
	}
	if block < 0 || block > ldlq.MaxN {
		return nil, fmt.Errorf("nwc: feedback block %d out of range", block)
	}
	name, err := pickCodec(cfg)
	if err != nil {
		return nil, err
	}
	fsys, name, err := Resolve(cfg.Codecs, name)
	if err != nil {
		return nil, err
	}
	id, err := Identify(fsys, name)
	if err != nil {
		return nil, err
	}
	c, err := Load(fsys, name, loadOptions(cfg.Env)...)
	if err != nil {
		return nil, err
	}
	return &encoder{id: id, c: c, block: block, uniform: cfg.UniformLevels, tune: cfg.TuneRowScales}, nil
}

// Codec returns the name of the trained codec the encoder uses.
func (e *encoder) String() string { return e.id.Name }

func (e *encoder) Close() error { return e.c.Close() }

// Encode: W [m, n] -> row scales, quality levels from diag(H), LDLQ over
// column blocks through the encoder network, rANS streams of the latents.
func (e *encoder) Encode(ctx context.Context, in codec.Input) (codec.Output, error) {
	if len(in.Info.Shape) != 2 {
		return codec.Output{}, fmt.Errorf("nwc: shape %v is not a matrix", in.Info.Shape)
	}
	m, n := int(in.Info.Shape[0]), int(in.Info.Shape[1])
	if m%D != 0 {
		return codec.Output{}, fmt.Errorf("nwc: %d rows is not a multiple of %d", m, D)
	}
	w, h := in.Weights, in.H
	if len(w) != m*n {
		return codec.Output{}, fmt.Errorf("nwc: %d weights for shape %v", len(w), in.Info.Shape)
	}
	scales := make([]uint16, m)
	wn := make([]float32, m*n)
	for i := 0; i < m; i++ {
		row := w[i*n : (i+1)*n]
		var s, s2 float64
		for _, v := range row {
			s += float64(v)
			s2 += float64(v) * float64(v)
		}
		mean := s / float64(n)
		std := math.Sqrt(math.Max(s2/float64(n)-mean*mean, 0))
		scales[i] = tensor.F32ToF16(float32(std))
		r := tensor.F16ToF32(scales[i])
		if r == 0 || math.IsInf(float64(r), 0) {
			scales[i] = tensor.F32ToF16(1)
			r = 1
		}
		for j, v := range row {
			wn[i*n+j] = v / r
		}
	}
	levels := codec.Levels(h, n)
	if e.uniform {
		levels = codec.Levels(nil, n)
	}
	f, err := ldlq.NewFactor(h, n, ldlq.Options{Workers: 1, BlockSize: e.block})
	if err != nil {
		return codec.Output{}, err
	}
	c := e.c
	kc := m / D // chunks per column
	syms := make([]int32, m*n)
	qAll := make([]int64, n*kc)
	for j := 0; j < n; j++ {
		for k := 0; k < kc; k++ {
			qAll[j*kc+k] = int64(levels[j])
		}
	}
	xn, err := f.Quantize(ctx, wn, m, func(s, end int, blk []float32) ([]float32, error) {
		cols := end - s
		nch := cols * kc
		x := make([]float32, nch*D)
		q := make([]int64, nch)
		for j := 0; j < cols; j++ {
			for k := 0; k < kc; k++ {
				ch := j*kc + k
				q[ch] = int64(levels[s+j])
				for t := 0; t < D; t++ {
					x[ch*D+t] = blk[(k*D+t)*cols+j]
				}
			}
		}
		y, err := c.Encode(ctx, x, q)
		if err != nil {
			return nil, err
		}
		sy, err := c.Quantize(y, q, syms[s*m:end*m])
		if err != nil {
			return nil, err
		}
		yh, err := c.Dequantize(sy, q, nil)
		if err != nil {
			return nil, err
		}
		xh, err := c.Decode(ctx, yh, q)
		if err != nil {
			return nil, err
		}
		out := make([]float32, m*cols)
		for j := 0; j < cols; j++ {
			for k := 0; k < kc; k++ {
				ch := j*kc + k
				for t := 0; t < D; t++ {
					out[(k*D+t)*cols+j] = xh[ch*D+t]
				}
			}
		}
		return out, nil
	})
	if err != nil {
		return codec.Output{}, err
	}
	if e.tune {
		if _, err := codec.TuneRowScales(w, xn, m, n, h, scales); err != nil {
			return codec.Output{}, fmt.Errorf("nwc: %w", err)
		}
	}
	payload := []byte{nwcPayloadVersion}
	for _, s := range scales {
		payload = binary.LittleEndian.AppendUint16(payload, s)
	}
	payload = codec.AppendLevels(payload, levels)
	payload, err = c.EncodeLevels(syms, qAll, payload)
	if err != nil {
		return codec.Output{}, err
	}
	return codec.Output{ID: codec.IDNWC, DType: tensor.F32, Params: e.id.params(), Payload: payload}, nil
}

// decoder decodes the nwc sections of one file, loading each trained codec
// the file names once, after checking its content hash.
type decoder struct {
	env    codec.Env
	mu     sync.Mutex
	loaded map[string]*Codec
}

func newDecoder(env codec.Env) (codec.Decoder, error) {
	return &decoder{env: env, loaded: map[string]*Codec{}}, nil
}

func (d *decoder) Decode(ctx context.Context, s codec.Section, payload, dst []byte) ([]byte, error) {
	c, err := d.codecFor(s)
	if err != nil {
		return nil, err
	}
	return decodeF32Section(s, dst, func(v []float32) ([]float32, error) {
		return c.DecodeMatrixInto(ctx, s.Shape, payload, v)
	})
}

// DecodeTransposed decodes a section into the transpose of its matrix
// (codec.TransposedDecoder).
func (d *decoder) DecodeTransposed(ctx context.Context, s codec.Section, payload []byte, dst []float32) ([]float32, error) {
	c, err := d.codecFor(s)
	if err != nil {
		return nil, err
	}
	return c.DecodeMatrixTransposed(ctx, s.Shape, payload, dst)
}

// codecFor checks that s is an F32 section and returns the codec it names.
func (d *decoder) codecFor(s codec.Section) (*Codec, error) {
	if err := codec.CheckF32("nwc", s); err != nil {
		return nil, err
	}
	return d.get(s.Params)
}

func (d *decoder) get(params []byte) (*Codec, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if c, ok := d.loaded[string(params)]; ok {
		return c, nil
	}
	fsys, name, err := findCodec(d.env, params)
	if err != nil {
		return nil, err
	}
	c, err := Load(fsys, name, append(loadOptions(d.env), WithDecoderOnly())...)
	if err != nil {
		return nil, err
	}
	d.loaded[string(params)] = c
	return c, nil
}

func (d *decoder) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	for _, c := range d.loaded {
		errs = append(errs, c.Close())
	}
	d.loaded = map[string]*Codec{}
	return errors.Join(errs...)
}
