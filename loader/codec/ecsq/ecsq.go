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
// With quality levels (`--codec ecsq:levels`, format version 2) the input
// columns get nwc's importance levels from diag(H) (codec.Levels: the top
// 0.1 / 1 / 10 % at levels 3 / 2 / 1) and level q is quantized with step
// step*codec.LevelStepRatio(q) (1, 0.594, 0.171, 0.121: the step sizes the
// method's rate weights imply, which nwc's network-free codecs learn too),
// each level coded with its own table. It is the baseline that isolates
// what nwc's learned transform adds beyond its levels.
//
// # Payload, all integers little endian
//
// Format version 1 (one step):
//
//	u8       version (1)
//	f32      step, finite, in [MinStep, MaxStep]
//	m x u16  row scales, fp16, finite and > 0
//	model    varint offset: value of table symbol 0 (zigzag);
//	         uvarint L, in-range table symbols, 1..MaxTableSymbols;
//	         (L+1) x uvarint frequencies of symbols offset..offset+L-1,
//	         then of the escape; each >= 1, summing to 1<<16
//	streams  entropy.EncodeStreams container of the m*n integers in
//	         row-major order, one channel (the table above)
//
// Format version 2 (quality levels):
//
//	u8       version (2)
//	f32      step of level 0, in [MinStep, MaxStep]
//	m x u16  row scales
//	ceil(n/4) bytes  the level of each input column, 2 bits, column j in
//	         bits 2*(j%4) of byte j/4 (as the nwc format)
//	3 x f32  steps of levels 1..3, each in [MinStep, MaxStep]
//	for each level with at least one column, 0 to 3:
//	  model, uvarint byte length of the streams, then the streams of the
//	  level's integers: rows in order, the level's columns in order
//
// Every varint is canonical. The payload is the whole coded tensor: bits per
// weight = 8*len(payload)/(m*n) counts the row scales, the levels, the
// tables and the stream headers.
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
		Doc:   "entropy-coded uniform scalar quantization with LDLQ feedback (--bits: target bits/weight, 0-16; calibration; ecsq:" + ArgLevels + " = nwc's quality levels, one step per level)",
		Lossy: true, Calibration: true, Takes: codec.TakesTuneRowScales,
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
			if cfg.Arg != "" && cfg.Arg != ArgLevels {
				return nil, fmt.Errorf("ecsq:%s: the only argument is %q", cfg.Arg, ArgLevels)
			}
			return encoder{bits: cfg.Bits, block: block, levels: cfg.Arg == ArgLevels, tune: cfg.TuneRowScales}, nil
		},
		NewDecoder: func(codec.Env) (codec.Decoder, error) { return decoder{}, nil }})
}

// ArgLevels is the codec argument that turns quality levels on
// (`--codec ecsq:levels`).
const ArgLevels = "levels"

type encoder struct {
	bits   float64
	block  int  // LDLQ feedback block
	levels bool // nwc's quality levels (format version 2)
	tune   bool // closed-form row-scale tuning
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
	opts := Options{Workers: 1, TuneRowScales: c.tune, H: in.H}
	if c.levels {
		if in.H == nil {
			return codec.Output{}, fmt.Errorf("ecsq:%s needs calibration data (H) to rank the columns", ArgLevels)
		}
		opts.Levels = codec.Levels(in.H, n)
	}
	res, err := StepForBits(ctx, in.Weights, m, n, f, c.bits, opts, SearchOptions{})
	if err != nil {
		return codec.Output{}, err
	}
	return codec.Output{ID: codec.IDECSQ, DType: tensor.F32, Params: []byte{res.Payload[0]}, Payload: res.Payload}, nil
}

type decoder struct{}

func (decoder) Decode(ctx context.Context, s codec.Section, payload, dst []byte) ([]byte, error) {
	if err := codec.CheckF32("ecsq", s); err != nil {
		return nil, err
	}
	if len(s.Params) != 1 || (s.Params[0] != Version && s.Params[0] != VersionLevels) {
		return nil, fmt.Errorf("%w: ecsq parameters %v", codec.ErrCorrupt, s.Params)
	}
	if len(payload) > 0 && payload[0] != s.Params[0] {
		return nil, fmt.Errorf("%w: ecsq payload version %d, parameters say %d", codec.ErrCorrupt, payload[0], s.Params[0])
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
	// Version is the one-step format; VersionLevels the format with
	// quality levels. Both are read.
	Version       = 1
	VersionLevels = 2
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
	// Levels, when not nil, holds the quality level (0..3) of each of the
	// n input columns: level q is quantized with step
	// step*codec.LevelStepRatio(q) (format version 2). Nil: one step for
	// every column (version 1).
	Levels []uint8
	// TuneRowScales refits each row's scale after coding to minimize the
	// row's proxy loss under H (nil H: least squares;
	// codec.TuneRowScales).
	TuneRowScales bool
	H             []float64
}

// Result is one encoded tensor.
type Result struct {
	Payload []byte
	// Step is the quantization step used (float32-exact; of level 0 when
	// there are levels).
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
	var steps [codec.NumLevels]float32
	for q := range steps {
		steps[q] = step32
		if opts.Levels != nil && q > 0 {
			steps[q] = float32(max(float64(step32)*codec.LevelStepRatio(q), MinStep))
		}
	}
	if opts.Levels != nil {
		if len(opts.Levels) != n {
			return nil, fmt.Errorf("%w: %d column levels for %d columns", ErrShape, len(opts.Levels), n)
		}
		for j, l := range opts.Levels {
			if int(l) >= codec.NumLevels {
				return nil, fmt.Errorf("%w: column %d has level %d", ErrShape, j, l)
			}
		}
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
			col := s + i%b
			st := step32
			if opts.Levels != nil {
				st = steps[opts.Levels[col]]
			}
			k := math.RoundToEven(float64(v) / float64(st))
			k = min(max(k, -maxCode), maxCode)
			codes[(i/b)*n+col] = int32(k)
			out[i] = float32(k) * st
		}
		return out, nil
	}
	U, err := f.Quantize(ctx, Wn, m, q)
	if err != nil {
		return nil, err
	}
	if opts.TuneRowScales {
		if _, err := codec.TuneRowScales(W, U, m, n, opts.H, hs); err != nil {
			return nil, fmt.Errorf("ecsq: %w", err)
		}
		for r, h := range hs {
			scales[r] = tensor.F16ToF32(h)
		}
	}
	version := byte(Version)
	if opts.Levels != nil {
		version = VersionLevels
	}
	payload := []byte{version}
	payload = binary.LittleEndian.AppendUint32(payload, math.Float32bits(step32))
	for _, h := range hs {
		payload = binary.LittleEndian.AppendUint16(payload, h)
	}
	res := &Result{Step: float64(step32), Note: f.Note, codes: codes}
	if opts.Levels == nil {
		md := buildModel(codes)
		tb, err := md.tables()
		if err != nil {
			return nil, fmt.Errorf("ecsq: internal: %w", err)
		}
		payload = appendModel(payload, md)
		res.SideBytes = len(payload)
		if payload, err = entropy.EncodeStreams(tb, codes, opts.StreamSymbols, payload, opts.Workers); err != nil {
			return nil, fmt.Errorf("ecsq: %w", err)
		}
		res.Escapes = md.escapes(codes)
	} else {
		payload = codec.AppendLevels(payload, opts.Levels)
		for _, st := range steps[1:] {
			payload = binary.LittleEndian.AppendUint32(payload, math.Float32bits(st))
		}
		for q, sub := range splitLevels(codes, opts.Levels, m, n) {
			if len(sub) == 0 {
				continue
			}
			md := buildModel(sub)
			tb, err := md.tables()
			if err != nil {
				return nil, fmt.Errorf("ecsq: internal: %w", err)
			}
			payload = appendModel(payload, md)
			res.SideBytes = len(payload) // the last level's model ends the side information
			st, err := entropy.EncodeStreams(tb, sub, opts.StreamSymbols, nil, opts.Workers)
			if err != nil {
				return nil, fmt.Errorf("ecsq: level %d: %w", q, err)
			}
			payload = binary.AppendUvarint(payload, uint64(len(st)))
			payload = append(payload, st...)
			res.Escapes += md.escapes(sub)
		}
	}
	res.Payload = payload
	res.What = reconstruct(codes, steps, opts.Levels, scales, n, nil)
	res.Bits = 8 * float64(len(payload)) / float64(m*n)
	res.StreamBytes = len(payload) - res.SideBytes
	return res, nil
}

// escapes counts the integers of codes coded with md's escape symbol.
func (md model) escapes(codes []int32) int {
	hi := md.offset + int64(len(md.freq)) - 2
	k := 0
	for _, v := range codes {
		if int64(v) < md.offset || int64(v) > hi {
			k++
		}
	}
	return k
}

// splitLevels returns the integers of each level's columns, rows in order
// and the level's columns in order within a row.
func splitLevels(codes []int32, lv []uint8, m, n int) [codec.NumLevels][]int32 {
	var cnt [codec.NumLevels]int
	for _, l := range lv {
		cnt[l]++
	}
	var out [codec.NumLevels][]int32
	for q := range out {
		out[q] = make([]int32, 0, cnt[q]*m)
	}
	for r := 0; r < m; r++ {
		for c, l := range lv {
			out[l] = append(out[l], codes[r*n+c])
		}
	}
	return out
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
		h := tensor.F32ToF16(1) // a zero row
		if ss != 0 {
			h = codec.ScaleF16(math.Sqrt(ss / float64(n)))
		}
		hs[r], fs[r] = h, tensor.F16ToF32(h)
	}
	return hs, fs, nil
}

// reconstruct computes What = float32(q) * (step * scale_r), with the step
// of each column's level when levels is not nil.
func reconstruct(codes []int32, steps [codec.NumLevels]float32, levels []uint8, scales []float32, n int, dst []float32) []float32 {
	if cap(dst) < len(codes) {
		dst = make([]float32, len(codes))
	}
	dst = dst[:len(codes)]
	for r, s := range scales {
		row := codes[r*n : (r+1)*n]
		out := dst[r*n : (r+1)*n]
		if levels == nil {
			f := steps[0] * s
			for c, q := range row {
				out[c] = float32(q) * f
			}
			continue
		}
		var f [codec.NumLevels]float32
		for q, st := range steps {
			f[q] = st * s
		}
		for c, q := range row {
			out[c] = float32(q) * f[levels[c]]
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
	h, err := decodeCodes(nil, payload, m, n, workers)
	if err != nil {
		return nil, err
	}
	return reconstruct(h.codes, h.steps, h.levels, h.scales, n, dst), nil
}

// decodeBytes decodes a payload of an m x n tensor into little-endian
// float32 bytes in dst (reused when large enough): what Decode gives, with
// the header, tables and rANS streams timed as stage.Entropy and the
// reconstruction into dst as stage.Rescale of st (nil: not timed).
func decodeBytes(st *stage.Times, payload []byte, m, n int, dst []byte) ([]byte, error) {
	h, err := decodeCodes(st, payload, m, n, 0)
	if err != nil {
		return nil, err
	}
	t0 := st.Start()
	codes := h.codes
	if cap(dst) < 4*len(codes) {
		dst = make([]byte, 4*len(codes))
	}
	dst = dst[:4*len(codes)]
	for r, s := range h.scales {
		var f [codec.NumLevels]float32
		for q, stp := range h.steps {
			f[q] = stp * s
		}
		if h.levels == nil {
			for i := r * n; i < (r+1)*n; i++ {
				binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(float32(codes[i])*f[0]))
			}
			continue
		}
		for c, l := range h.levels {
			i := r*n + c
			binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(float32(codes[i])*f[l]))
		}
	}
	st.Since(stage.Rescale, t0, int64(len(codes)))
	return dst, nil
}

// decoded is a parsed payload: the integers (row-major), the step of each
// level (all four equal to the one step in format version 1), the column
// levels (nil in version 1) and the row scales.
type decoded struct {
	codes  []int32
	steps  [codec.NumLevels]float32
	levels []uint8
	scales []float32
}

func readStep(p []byte, what string) (float32, error) {
	step := math.Float32frombits(binary.LittleEndian.Uint32(p))
	if !(float64(step) >= MinStep && float64(step) <= MaxStep) {
		return 0, fmt.Errorf("%w: %s %v", ErrCorrupt, what, step)
	}
	return step, nil
}

// decodeCodes parses the header and row scales and decodes the integer
// codes (stage.Entropy of st).
func decodeCodes(st *stage.Times, payload []byte, m, n, workers int) (decoded, error) {
	var h decoded
	if err := checkShape(m, n); err != nil {
		return h, err
	}
	t0 := st.Start()
	if len(payload) < 5+2*m {
		return h, fmt.Errorf("%w: %d bytes cannot hold the header and %d row scales", ErrCorrupt, len(payload), m)
	}
	if payload[0] != Version && payload[0] != VersionLevels {
		return h, fmt.Errorf("%w: format version %d, want %d or %d", ErrCorrupt, payload[0], Version, VersionLevels)
	}
	step, err := readStep(payload[1:], "step")
	if err != nil {
		return h, err
	}
	for q := range h.steps {
		h.steps[q] = step
	}
	h.scales = make([]float32, m)
	for r := range h.scales {
		v := binary.LittleEndian.Uint16(payload[5+2*r:])
		if v == 0 || v >= 0x7c00 { // zero, negative, inf or nan
			return h, fmt.Errorf("%w: row %d scale %#04x", ErrCorrupt, r, v)
		}
		h.scales[r] = tensor.F16ToF32(v)
	}
	p := payload[5+2*m:]
	if payload[0] == Version {
		md, err := parseModel(&p)
		if err != nil {
			return h, err
		}
		tb, err := md.tables()
		if err != nil {
			return h, fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
		if h.codes, err = entropy.DecodeStreams(tb, p, m*n, nil, workers); err != nil {
			return h, fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
		st.Since(stage.Entropy, t0, int64(len(h.codes)))
		return h, nil
	}
	nb := (n + 3) / 4
	if len(p) < nb+12 {
		return h, fmt.Errorf("%w: %d bytes cannot hold %d column levels and 3 steps", ErrCorrupt, len(p), n)
	}
	h.levels = codec.ReadLevels(p, n)
	var cnt [codec.NumLevels]int
	for _, l := range h.levels {
		cnt[l]++
	}
	if n%4 != 0 && p[nb-1]>>(2*(n%4)) != 0 {
		return h, fmt.Errorf("%w: padding bits of the column levels are set", ErrCorrupt)
	}
	p = p[nb:]
	for q := 1; q < codec.NumLevels; q++ {
		if h.steps[q], err = readStep(p[4*(q-1):], fmt.Sprintf("level %d step", q)); err != nil {
			return h, err
		}
	}
	p = p[12:]
	var per [codec.NumLevels][]int32
	for q := range per {
		if cnt[q] == 0 {
			continue
		}
		md, err := parseModel(&p)
		if err != nil {
			return h, fmt.Errorf("level %d: %w", q, err)
		}
		tb, err := md.tables()
		if err != nil {
			return h, fmt.Errorf("%w: level %d: %w", ErrCorrupt, q, err)
		}
		sz, err := readUvarint(&p)
		if err != nil {
			return h, fmt.Errorf("level %d: %w", q, err)
		}
		if sz > uint64(len(p)) {
			return h, fmt.Errorf("%w: level %d streams of %d bytes, %d left", ErrCorrupt, q, sz, len(p))
		}
		if per[q], err = entropy.DecodeStreams(tb, p[:sz], m*cnt[q], nil, workers); err != nil {
			return h, fmt.Errorf("%w: level %d: %w", ErrCorrupt, q, err)
		}
		p = p[sz:]
	}
	if len(p) != 0 {
		return h, fmt.Errorf("%w: %d bytes after the last level", ErrCorrupt, len(p))
	}
	h.codes = make([]int32, m*n)
	var pos [codec.NumLevels]int
	for r := 0; r < m; r++ {
		for c, l := range h.levels {
			h.codes[r*n+c] = per[l][pos[l]]
			pos[l]++
		}
	}
	st.Since(stage.Entropy, t0, int64(len(h.codes)))
	return h, nil
}
