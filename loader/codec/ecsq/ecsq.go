// Package ecsq is the ECSQ baseline codec: entropy-constrained scalar
// quantization with the same normalization and LDLQ error feedback as NWC
// but no networks. Each row of W is divided by its RMS (its standard
// deviation about zero; one fp16 per row), the normalized matrix is
// quantized to integers q = round(w/step) through ldlq (feedback over
// column blocks, last to first), and the integers are rANS-coded with a
// static per-tensor model (the histogram of the integers, quantized to a
// 16-bit CDF with an escape for rare tails) that is stored in the payload.
// Decoding is entropy decoding and one multiply per weight:
//
//	What[r, c] = float32(q[r, c]) * (float32(step) * scale_r)
//
// # Payload (format version 1), all integers little endian
//
//	u8       version (1)
//	f32      step, finite, in [MinStep, MaxStep]
//	m x u16  row scales, fp16, finite and > 0
//	varint   offset: value of table symbol 0 (zigzag)
//	uvarint  L, in-range table symbols, 1..MaxTableSymbols
//	(L+1) x uvarint  frequencies of symbols offset..offset+L-1, then of the
//	         escape; each >= 1, summing to 1<<16
//	streams  entropy.EncodeStreams container of the m*n integers in
//	         row-major order, one channel (the table above)
//
// Every varint is canonical. The payload is the whole coded tensor: bits per
// weight = 8*len(payload)/(m*n) counts the row scales, the table and the
// stream headers.
package ecsq

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"runtime"

	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/stage"
	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/ortcodec/entropy"
	"github.com/nwc-project/nwc/ortcodec/ldlq"
)

// Format constants.
func init() {
	codec.Register(codec.Codec{Name: "ecsq", ID: codec.IDECSQ,
		Doc:   "entropy-coded uniform scalar quantization with LDLQ feedback (--bits: target bits/weight, 0-16; calibration)",
		Lossy: true, Calibration: true,
		NewEncoder: func(cfg codec.Config) (codec.Encoder, error) {
			if !(cfg.Bits > 0 && cfg.Bits <= 16) {
				return nil, fmt.Errorf("ecsq needs 0 < --bits <= 16, got %g", cfg.Bits)
			}
			block := cfg.FeedbackBlock
			if block == 0 {
				block = ldlq.FeedbackBlock
			}
			if block < 0 || block > ldlq.MaxN {
				return nil, fmt.Errorf("ecsq: feedback block %d out of range", block)
			}
			return encoder{bits: cfg.Bits, block: block}, nil
		},
		NewDecoder: func(codec.Env) (codec.Decoder, error) { return decoder{}, nil }})
}

type encoder struct {
	bits  float64
	block int // LDLQ feedback block
}

func (c encoder) Encode(ctx context.Context, in codec.Input) (codec.Output, error) {
	m, n, err := codec.MatrixDims(in.Info.Shape)
	if err != nil {
		return codec.Output{}, err
	}
	f, err := ldlq.NewFactor(in.H, n, ldlq.Options{Workers: 1, BlockSize: c.block})
	if err != nil {
		return codec.Output{}, err
	}
	res, err := StepForBits(ctx, in.Weights, m, n, f, c.bits, Options{Workers: 1}, SearchOptions{})
	if err != nil {
		return codec.Output{}, err
	}
	return codec.Output{ID: codec.IDECSQ, DType: tensor.F32, Params: []byte{Version}, Payload: res.Payload}, nil
}

type decoder struct{}

func (decoder) Decode(ctx context.Context, s codec.Section, payload, dst []byte) ([]byte, error) {
	if err := codec.CheckF32("ecsq", s); err != nil {
		return nil, err
	}
	if len(s.Params) != 1 || s.Params[0] != Version {
		return nil, fmt.Errorf("%w: ecsq parameters %v", codec.ErrCorrupt, s.Params)
	}
	if len(s.Shape) != 2 {
		return nil, fmt.Errorf("%w: ecsq shape %v", codec.ErrCorrupt, s.Shape)
	}
	m, n, err := codec.MatrixDims(s.Shape)
	if err != nil {
		return nil, err
	}
	return decodeBytes(stage.From(ctx), payload, m, n, dst)
}

const (
	Version = 1
	// MinStep and MaxStep bound the quantization step (on the normalized,
	// unit-RMS scale).
	MinStep = 1.0 / (1 << 20)
	MaxStep = float64(1 << 20)
	// DefaultStreamSymbols is the number of symbols per independent rANS
	// stream (parallel decode; about 9 bytes of overhead per stream).
	DefaultStreamSymbols = 1 << 16
	// MaxWeights bounds m*n of one tensor.
	MaxWeights = 1 << 32
	// maxCode bounds |q| (the entropy coder's magnitude limit).
	maxCode = entropy.MaxMagnitude
)

// Errors, wrapped with context; test with errors.Is.
var (
	// ErrCorrupt: a payload is malformed (also wraps entropy.ErrCorrupt
	// for bad streams).
	ErrCorrupt = fmt.Errorf("ecsq: %w", codec.ErrCorrupt)
	// ErrShape: bad m, n or slice lengths.
	ErrShape = errors.New("ecsq: bad shape")
	// ErrStep: step not finite or outside [MinStep, MaxStep].
	ErrStep = errors.New("ecsq: bad step")
)

// Options configures encoding. The zero value means the defaults.
type Options struct {
	// LDLQ configures the feedback (block size 128, damping 0.01 by
	// default: NWC's settings). Used when a Factor is built from H here.
	LDLQ ldlq.Options
	// StreamSymbols is the number of symbols per rANS stream (0 = 65536).
	StreamSymbols int
	// Workers bounds the goroutines of the entropy coder (0 = GOMAXPROCS).
	Workers int
}

// Result is one encoded tensor.
type Result struct {
	Payload []byte
	// Step is the quantization step used (float32-exact).
	Step float64
	// What is the m x n reconstruction, exactly what Decode(Payload) gives.
	What []float32
	// Bits is 8*len(Payload)/(m*n).
	Bits float64
	// SideBytes is the part of the payload before the streams (version,
	// step, row scales, table); StreamBytes the rest.
	SideBytes, StreamBytes int
	// Escapes counts the integers coded with the escape symbol.
	Escapes int
	// Note carries the ldlq factor's note (damping raised), if any.
	Note string

	codes []int32
}

// Encode codes W (m x n, row-major) with step on the normalized scale and
// LDLQ feedback from H (n x n; nil = no feedback), with default options.
func Encode(ctx context.Context, W []float32, m, n int, H []float64, step float64) ([]byte, error) {
	f, err := ldlq.NewFactor(H, n, ldlq.Options{})
	if err != nil {
		return nil, err
	}
	res, err := EncodeFactor(ctx, W, m, n, f, step, Options{})
	if err != nil {
		return nil, err
	}
	return res.Payload, nil
}

// EncodeFactor codes W with a prepared LDLQ factor (f.N must be n; nil means
// no feedback).
func EncodeFactor(ctx context.Context, W []float32, m, n int, f *ldlq.Factor, step float64, opts Options) (*Result, error) {
	step32 := float32(step)
	if !(float64(step32) >= MinStep && float64(step32) <= MaxStep) {
		return nil, fmt.Errorf("%w: %v outside [%g, %g]", ErrStep, step, MinStep, MaxStep)
	}
	if err := checkShape(m, n); err != nil {
		return nil, err
	}
	if len(W) != m*n {
		return nil, fmt.Errorf("%w: W has %d values, want %d x %d", ErrShape, len(W), m, n)
	}
	if f == nil {
		var err error
		if f, err = ldlq.NewFactor(nil, n, opts.LDLQ); err != nil {
			return nil, err
		}
	}
	if f.N != n {
		return nil, fmt.Errorf("%w: factor for %d columns, W has %d", ErrShape, f.N, n)
	}
	if opts.StreamSymbols == 0 {
		opts.StreamSymbols = DefaultStreamSymbols
	}
	if opts.StreamSymbols < 1 || opts.StreamSymbols > entropy.MaxChunksPerStream {
		return nil, fmt.Errorf("ecsq: stream symbols %d outside [1, %d]", opts.StreamSymbols, entropy.MaxChunksPerStream)
	}
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	hs, scales, err := rowScales(W, m, n)
	if err != nil {
		return nil, err
	}
	Wn := make([]float32, m*n)
	for r := 0; r < m; r++ {
		for c := 0; c < n; c++ {
			Wn[r*n+c] = W[r*n+c] / scales[r]
		}
	}
	codes := make([]int32, m*n)
	q := func(s, e int, w []float32) ([]float32, error) {
		b := e - s
		out := make([]float32, len(w))
		for i, v := range w {
			k := math.RoundToEven(float64(v) / float64(step32))
			k = min(max(k, -maxCode), maxCode)
			codes[(i/b)*n+s+i%b] = int32(k)
			out[i] = float32(k) * step32
		}
		return out, nil
	}
	if _, err := f.Quantize(ctx, Wn, m, q); err != nil {
		return nil, err
	}
	md := buildModel(codes)
	tb, err := md.tables()
	if err != nil {
		return nil, fmt.Errorf("ecsq: internal: %w", err)
	}
	payload := []byte{Version}
	payload = binary.LittleEndian.AppendUint32(payload, math.Float32bits(step32))
	for _, h := range hs {
		payload = binary.LittleEndian.AppendUint16(payload, h)
	}
	payload = appendModel(payload, md)
	side := len(payload)
	payload, err = entropy.EncodeStreams(tb, codes, opts.StreamSymbols, payload, opts.Workers)
	if err != nil {
		return nil, fmt.Errorf("ecsq: %w", err)
	}
	res := &Result{
		Payload: payload, Step: float64(step32), What: reconstruct(codes, step32, scales, n, nil),
		Bits: 8 * float64(len(payload)) / float64(m*n), SideBytes: side, StreamBytes: len(payload) - side,
		Note: f.Note, codes: codes,
	}
	hi := md.offset + int64(len(md.freq)) - 2
	for _, v := range codes {
		if int64(v) < md.offset || int64(v) > hi {
			res.Escapes++
		}
	}
	return res, nil
}

func checkShape(m, n int) error {
	if m < 1 || n < 1 || int64(m)*int64(n) > MaxWeights {
		return fmt.Errorf("%w: %d x %d", ErrShape, m, n)
	}
	return nil
}

// rowScales returns the fp16 row RMS values and their float32 values. A zero
// row gets 1; an RMS below the smallest fp16 subnormal gets that subnormal,
// one above the largest fp16 gets the largest.
func rowScales(W []float32, m, n int) ([]uint16, []float32, error) {
	hs := make([]uint16, m)
	fs := make([]float32, m)
	for r := 0; r < m; r++ {
		var ss float64
		for c, v := range W[r*n : (r+1)*n] {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return nil, nil, fmt.Errorf("%w: W[%d, %d] = %v", ldlq.ErrNotFinite, r, c, v)
			}
			ss += float64(v) * float64(v)
		}
		rms := math.Sqrt(ss / float64(n))
		var h uint16
		switch {
		case ss == 0:
			h = tensor.F32ToF16(1)
		case rms >= 65504:
			h = 0x7bff
		default:
			h = tensor.F32ToF16(float32(rms))
			if h == 0 {
				h = 1
			}
		}
		hs[r], fs[r] = h, tensor.F16ToF32(h)
	}
	return hs, fs, nil
}

// reconstruct computes What = float32(q) * (step * scale_r).
func reconstruct(codes []int32, step float32, scales []float32, n int, dst []float32) []float32 {
	if cap(dst) < len(codes) {
		dst = make([]float32, len(codes))
	}
	dst = dst[:len(codes)]
	for r, s := range scales {
		f := step * s
		row := codes[r*n : (r+1)*n]
		out := dst[r*n : (r+1)*n]
		for c, q := range row {
			out[c] = float32(q) * f
		}
	}
	return dst
}

// Decode decodes a payload of an m x n tensor into dst (reused when large
// enough) and returns the m x n values. Malformed payloads are ErrCorrupt;
// Decode never panics and allocates O(m*n) (the output and the integers)
// plus O(len(payload)).
func Decode(payload []byte, m, n int, dst []float32) ([]float32, error) {
	return DecodeWorkers(payload, m, n, dst, 0)
}

// DecodeWorkers is Decode with at most workers goroutines for the streams
// (<= 0 means GOMAXPROCS). The output does not depend on workers.
func DecodeWorkers(payload []byte, m, n int, dst []float32, workers int) ([]float32, error) {
	codes, step, scales, err := decodeCodes(nil, payload, m, n, workers)
	if err != nil {
		return nil, err
	}
	return reconstruct(codes, step, scales, n, dst), nil
}

// decodeBytes decodes a payload of an m x n tensor into little-endian
// float32 bytes in dst (reused when large enough): what Decode gives, with
// the header, tables and rANS streams timed as stage.Entropy and the
// reconstruction into dst as stage.Rescale of st (nil: not timed).
func decodeBytes(st *stage.Times, payload []byte, m, n int, dst []byte) ([]byte, error) {
	codes, step, scales, err := decodeCodes(st, payload, m, n, 0)
	if err != nil {
		return nil, err
	}
	t0 := st.Start()
	if cap(dst) < 4*len(codes) {
		dst = make([]byte, 4*len(codes))
	}
	dst = dst[:4*len(codes)]
	for r, s := range scales {
		f := step * s
		for i := r * n; i < (r+1)*n; i++ {
			binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(float32(codes[i])*f))
		}
	}
	st.Since(stage.Rescale, t0, int64(len(codes)))
	return dst, nil
}

// decodeCodes parses the header and row scales and decodes the integer
// codes (stage.Entropy of st).
func decodeCodes(st *stage.Times, payload []byte, m, n, workers int) (codes []int32, step float32, scales []float32, err error) {
	if err := checkShape(m, n); err != nil {
		return nil, 0, nil, err
	}
	t0 := st.Start()
	if len(payload) < 5+2*m {
		return nil, 0, nil, fmt.Errorf("%w: %d bytes cannot hold the header and %d row scales", ErrCorrupt, len(payload), m)
	}
	if payload[0] != Version {
		return nil, 0, nil, fmt.Errorf("%w: format version %d, want %d", ErrCorrupt, payload[0], Version)
	}
	step = math.Float32frombits(binary.LittleEndian.Uint32(payload[1:]))
	if !(float64(step) >= MinStep && float64(step) <= MaxStep) {
		return nil, 0, nil, fmt.Errorf("%w: step %v", ErrCorrupt, step)
	}
	scales = make([]float32, m)
	for r := range scales {
		h := binary.LittleEndian.Uint16(payload[5+2*r:])
		if h == 0 || h >= 0x7c00 { // zero, negative, inf or nan
			return nil, 0, nil, fmt.Errorf("%w: row %d scale %#04x", ErrCorrupt, r, h)
		}
		scales[r] = tensor.F16ToF32(h)
	}
	p := payload[5+2*m:]
	md, err := parseModel(&p)
	if err != nil {
		return nil, 0, nil, err
	}
	tb, err := md.tables()
	if err != nil {
		return nil, 0, nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	codes, err = entropy.DecodeStreams(tb, p, m*n, nil, workers)
	if err != nil {
		return nil, 0, nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	st.Since(stage.Entropy, t0, int64(len(codes)))
	return codes, step, scales, nil
}
