// Package gptq implements GPTQ (Frantar et al., 2022) as a baseline codec:
// asymmetric uniform quantization with per-(row, group) fp16 scale and zero
// point, columns quantized first to last with optimal-brain-surgeon error
// compensation through the upper Cholesky factor of H^-1. Its output is a
// loader/codec/rtn payload (codec id 16), so GPTQ needs no decoder of its
// own.
//
// It follows the reference code (gptq.py, fasterquant) with act_order and
// static_groups off (Options.ActOrder turns both on, below):
//
//	dead = diag(H) == 0: H[dead, dead] = 1, W[:, dead] = 0
//	H += Damping * mean(diag(H)) * I
//	U = cholesky(H^-1, upper)            (H^-1 = U^T U)
//	for blocks [i1, i2) of BlockSize columns:
//	    W1 = W[:, i1:i2]
//	    for i in i1..i2-1:
//	        if i % Group == 0: scale, zero per row from W[:, i:i+Group]
//	            (W as lazily updated: in-block updates are in W1 only)
//	        q = (clamp(round(W1[:, i]/scale) + zero, 0, maxq) - zero) * scale
//	        err = (W1[:, i] - q) / U[i, i]
//	        W1[:, i:i2] -= err U[i, i:i2]
//	        E[:, i] = err
//	    W[:, i2:] -= E U[i1:i2, i2:]
//
// With Options.ActOrder (the reference's act_order with static_groups):
// every group's scale and zero are computed first, from W in the original
// column order (dead columns zeroed); then the columns of W and the rows
// and columns of H are permuted by descending diag(H) (a stable sort), GPTQ
// runs as above in that order with each column taking its static group's
// parameters, and the codes are stored back in the original order: the
// section is an ordinary rtn section, decoded as any other.
//
// Deviations, all deliberate: the scale and zero point are rounded to fp16
// before any code is chosen, and the error fed back is the one of the
// fp16-decoded value, so what GPTQ optimized is exactly what the rtn
// decoder gives; the group-parameter rule is loader/codec/rtn's (range always holds
// 0; an all-zero range gets scale 1, where the reference uses [-1, 1]), so
// with H = I GPTQ gives RTN's payload byte for byte; arithmetic is float64
// (the reference runs float32 on a GPU); a non-PD H gets its damping raised
// by factors of 10 (Result.Note) instead of failing.
package gptq

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/codec/rtn"
	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/ortcodec/ldlq"
)

// ArgActOrder is the codec argument that turns act-order on
// (`--codec gptq-g128:act`).
const ArgActOrder = "act"

func init() {
	for _, g := range rtn.Groups {
		name := fmt.Sprintf("gptq-g%d", g)
		codec.Register(codec.Codec{Name: name,
			Doc:   fmt.Sprintf("GPTQ, groups of %d columns, writes rtn sections (--bits 1..8; calibration; %s:%s = act-order, static groups)", g, name, ArgActOrder),
			Lossy: true, Calibration: true,
			NewEncoder: func(cfg codec.Config) (codec.Encoder, error) {
				b, err := rtn.WholeBits(name, cfg.Bits)
				if err != nil {
					return nil, err
				}
				if cfg.Arg != "" && cfg.Arg != ArgActOrder {
					return nil, fmt.Errorf("%w: %s:%s (the only argument is %q)", ErrOptions, name, cfg.Arg, ArgActOrder)
				}
				return encoder{Options{Bits: b, Group: g, ActOrder: cfg.Arg == ArgActOrder, Workers: 1}}, nil
			}})
	}
}

type encoder struct{ opts Options }

func (e encoder) Encode(ctx context.Context, in codec.Input) (codec.Output, error) {
	m, n, err := codec.MatrixDims(in.Info.Shape)
	if err != nil {
		return codec.Output{}, err
	}
	res, err := Quantize(ctx, in.Weights, m, n, in.H, e.opts)
	if err != nil {
		return codec.Output{}, err
	}
	return codec.Output{ID: rtn.ID, DType: tensor.F32, Params: res.Codec.Params(), Payload: res.Payload}, nil
}

// Defaults of the reference configuration; the block and damping defaults
// are LDLQ's (the same factorization of H).
const (
	DefaultGroup      = 128
	DefaultBlockSize  = ldlq.DefaultBlockSize
	DefaultDamping    = ldlq.DefaultDamping
	DefaultMaxDamping = ldlq.DefaultMaxDamping
)

// Errors, wrapped with context; test with errors.Is. Shape and finiteness
// errors reuse the ldlq sentinels.
var (
	ErrShape     = ldlq.ErrShape
	ErrNotFinite = ldlq.ErrNotFinite
	ErrNotPD     = ldlq.ErrNotPD
	ErrOptions   = errors.New("gptq: bad options")
)

// Options configures Quantize.
type Options struct {
	// Bits per code, 1..8 (required).
	Bits int
	// Group is the number of columns per (scale, zero) group (0 = 128).
	Group int
	// BlockSize is the lazy-update block width (0 = 128).
	BlockSize int
	// Damping is the relative damping (0 = 0.01): Damping*mean(diag(H)) is
	// added to the diagonal.
	Damping float64
	// MaxDamping bounds the damping raised for a non-PD H (0 = 1.0).
	MaxDamping float64
	// ActOrder quantizes the columns in descending diag(H) order, with
	// static groups (parameters from the original column order).
	ActOrder bool
	// Workers bounds the goroutines (0 = GOMAXPROCS). Results do not depend
	// on it.
	Workers int
}

func (o Options) withDefaults() (Options, error) {
	if o.Group == 0 {
		o.Group = DefaultGroup
	}
	if o.BlockSize == 0 {
		o.BlockSize = DefaultBlockSize
	}
	if o.Damping == 0 {
		o.Damping = DefaultDamping
	}
	if o.MaxDamping == 0 {
		o.MaxDamping = DefaultMaxDamping
	}
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	if o.Bits < 1 || o.Bits > 8 {
		return o, fmt.Errorf("%w: bits %d outside 1..8", ErrOptions, o.Bits)
	}
	if o.Group < 1 || o.Group > 1<<20 || o.BlockSize < 1 || o.BlockSize > ldlq.MaxN {
		return o, fmt.Errorf("%w: group %d, block size %d", ErrOptions, o.Group, o.BlockSize)
	}
	if !(o.Damping > 0) || !(o.MaxDamping >= o.Damping) || math.IsInf(o.MaxDamping, 0) {
		return o, fmt.Errorf("%w: damping %g, max damping %g", ErrOptions, o.Damping, o.MaxDamping)
	}
	return o, nil
}

// Result is a GPTQ-quantized matrix.
type Result struct {
	// Codec and Payload: a loader/codec RTN payload (codec id
	// rtn.ID, params Codec.Params()) of the m x n matrix.
	Codec   rtn.Quantizer
	Payload []byte
	// What is the m x n reconstruction, exactly what the payload decodes to.
	What []float32
	// Damping is the relative damping used; Note is set when it had to be
	// raised above Options.Damping.
	Damping float64
	Note    string
	// Dead counts the columns with diag(H) = 0 (zeroed, as the reference).
	Dead int
}

// Quantize runs GPTQ on W (m x n, row-major) with H (n x n, row-major, = X^T
// X over the inputs; nil means the identity, where GPTQ is exactly RTN).
func Quantize(ctx context.Context, W []float32, m, n int, H []float64, opts Options) (*Result, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if m < 1 || n < 1 || n > ldlq.MaxN || int64(m)*int64(n) > ldlq.MaxWeights || len(W) != m*n {
		return nil, fmt.Errorf("%w: W has %d values as %d x %d", ErrShape, len(W), m, n)
	}
	if H != nil && len(H) != n*n {
		return nil, fmt.Errorf("%w: H has %d values, want %d x %d", ErrShape, len(H), n, n)
	}
	for i, v := range W {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return nil, fmt.Errorf("%w: W[%d, %d] = %v", ErrNotFinite, i/n, i%n, v)
		}
	}
	res := &Result{Codec: rtn.Quantizer{Bits: opts.Bits, Group: opts.Group}, Damping: opts.Damping}
	dead := make([]bool, n)
	var perm []int
	if opts.ActOrder {
		perm = make([]int, n)
	}
	U, err := res.hinvFactor(H, n, dead, perm, opts)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	g := min(opts.Group, n)
	ng := (n + g - 1) / g
	st := &state{
		n: n, g: g, ng: ng, bs: opts.BlockSize, bits: opts.Bits, maxq: float32(int(1)<<opts.Bits - 1), U: U, dead: dead, perm: perm,
		W: W, What: make([]float32, m*n), codes: make([]uint8, m*n),
		scales: make([]uint16, m*ng), zeros: make([]uint8, m*ng),
	}
	const batch = 8 // rows sharing each pass over U
	var next atomic.Int64
	var wg sync.WaitGroup
	workers := min(opts.Workers, (m+batch-1)/batch)
	for k := 0; k < workers; k++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				lo := int(next.Add(batch)) - batch
				if lo >= m || ctx.Err() != nil {
					return
				}
				st.rows(lo, min(lo+batch, m))
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	res.What = st.What
	res.Payload, err = rtn.Pack(res.Codec, m, n, st.scales, st.zeros, st.codes)
	if err != nil {
		return nil, err
	}
	return res, nil
}

// hinvFactor returns U (n x n row-major, upper) with (H')^-1 = U^T U for
// the damped H' (identity H: U = I/sqrt(1+damping)), marking dead columns.
// A non-nil perm (n long) receives the act-order permutation (descending
// diag(H) after the dead columns' diagonal is set to 1, stable), and U is
// that of H' with rows and columns permuted by it.
func (res *Result) hinvFactor(H []float64, n int, dead []bool, perm []int, opts Options) ([]float64, error) {
	a := make([]float64, n*n)
	if H == nil {
		for i := 0; i < n; i++ {
			a[i*n+i] = 1
		}
	} else {
		for i, v := range H {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return nil, fmt.Errorf("%w: H[%d, %d] = %v", ErrNotFinite, i/n, i%n, v)
			}
		}
		for i := 0; i < n; i++ {
			for j := 0; j < n; j++ {
				a[i*n+j] = (H[i*n+j] + H[j*n+i]) / 2
			}
			if a[i*n+i] == 0 {
				dead[i] = true
				res.Dead++
				a[i*n+i] = 1
			}
		}
	}
	if perm != nil {
		a = permute(a, n, perm)
	}
	var mean float64
	for i := 0; i < n; i++ {
		mean += a[i*n+i]
	}
	mean /= float64(n)
	if !(mean > 0) || math.IsInf(mean, 0) {
		return nil, fmt.Errorf("%w: mean diagonal %g", ErrNotPD, mean)
	}
	// H' = J K K^T J with K = chol(J H' J) (J reverses the order) is
	// R R^T with R = J K J upper, so H'^-1 = R^-T R^-1 = U^T U with
	// U = R^-1 = J K^-1 J: one Cholesky and one triangular inverse.
	rev := make([]float64, n*n)
	var err error
	for damp := opts.Damping; damp <= opts.MaxDamping*(1+1e-12); damp *= 10 {
		for i := 0; i < n; i++ {
			for j := 0; j <= i; j++ {
				rev[i*n+j] = a[(n-1-i)*n+(n-1-j)]
			}
			rev[i*n+i] += damp * mean
		}
		if err = ldlq.Cholesky(rev, n, opts.Workers); err == nil {
			if damp != opts.Damping {
				res.Note = fmt.Sprintf("H + %g*mean(diag)*I not positive definite; damping raised to %g", opts.Damping, damp)
			}
			res.Damping = damp
			break
		}
		if !errors.Is(err, ErrNotPD) {
			return nil, err
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%w (tried damping %g to %g)", err, opts.Damping, opts.MaxDamping)
	}
	kinv, err := ldlq.InvertLower(rev, n, opts.Workers)
	if err != nil {
		return nil, err
	}
	U := rev // reuse: U[i, j] = K^-1[n-1-i, n-1-j]
	for i := 0; i < n; i++ {
		for j := 0; j < n; j++ {
			U[i*n+j] = kinv[(n-1-i)*n+(n-1-j)]
		}
	}
	return U, nil
}

// permute fills perm with the columns by descending diagonal of the n x n
// matrix a (ties in column order) and returns a with its rows and columns
// in that order.
func permute(a []float64, n int, perm []int) []float64 {
	for i := range perm {
		perm[i] = i
	}
	sort.SliceStable(perm, func(i, j int) bool { return a[perm[i]*n+perm[i]] > a[perm[j]*n+perm[j]] })
	p := make([]float64, n*n)
	for i, pi := range perm {
		for j, pj := range perm {
			p[i*n+j] = a[pi*n+pj]
		}
	}
	return p
}

type state struct {
	n, g, ng, bs int
	bits         int
	maxq         float32
	U            []float64
	dead         []bool
	perm         []int // act-order: position j quantizes column perm[j] (nil: j)
	W            []float32
	What         []float32
	codes        []uint8
	scales       []uint16
	zeros        []uint8
}

// rows quantizes rows [lo, hi) (independent of all other rows).
func (st *state) rows(lo, hi int) {
	n, bs, U := st.n, st.bs, st.U
	R := hi - lo
	w := make([][]float64, R)  // lazily updated rows
	w1 := make([][]float64, R) // current block, eagerly updated
	errs := make([][]float64, R)
	scale := make([]float32, R)
	zero := make([]float32, R)
	var static [][2][]float32 // act-order: each row's scales and zeros, all groups
	if st.perm != nil {
		static = make([][2][]float32, R)
	}
	for k := range w {
		w[k] = make([]float64, n)
		for c, v := range st.W[(lo+k)*n : (lo+k+1)*n] {
			if !st.dead[c] {
				w[k][c] = float64(v)
			}
		}
		if st.perm != nil {
			static[k] = [2][]float32{make([]float32, st.ng), make([]float32, st.ng)}
			for gi := 0; gi < st.ng; gi++ {
				o := (lo+k)*st.ng + gi
				st.scales[o], st.zeros[o], static[k][0][gi], static[k][1][gi] = params(w[k][gi*st.g:min((gi+1)*st.g, n)], st.bits)
			}
			orig := w[k]
			w[k] = make([]float64, n)
			for j, c := range st.perm {
				w[k][j] = orig[c]
			}
		}
		w1[k] = make([]float64, bs)
		errs[k] = make([]float64, bs)
	}
	for i1 := 0; i1 < n; i1 += bs {
		i2 := min(i1+bs, n)
		for k := range w {
			copy(w1[k], w[k][i1:i2])
		}
		for col := i1; col < i2; col++ {
			i := col - i1
			orig := col // the column's index in W
			if st.perm != nil {
				orig = st.perm[col]
				for k := range w {
					scale[k], zero[k] = static[k][0][orig/st.g], static[k][1][orig/st.g]
				}
			} else if col%st.g == 0 {
				gi := col / st.g
				for k := range w {
					o := (lo+k)*st.ng + gi
					st.scales[o], st.zeros[o], scale[k], zero[k] = params(w[k][col:min(col+st.g, n)], st.bits)
				}
			}
			urow := U[col*n : (col+1)*n]
			d := urow[col]
			for k := range w {
				v := float32(w1[k][i])
				c := float32(math.RoundToEven(float64(v/scale[k]))) + zero[k]
				c = min(max(c, 0), st.maxq)
				q := (c - zero[k]) * scale[k]
				o := (lo+k)*n + orig
				st.codes[o] = uint8(c)
				st.What[o] = q
				e := (w1[k][i] - float64(q)) / d
				errs[k][i] = e
				axpyNeg(w1[k][i:i2-i1], e, urow[col:i2])
			}
		}
		if i2 == n {
			break
		}
		for col := i1; col < i2; col++ {
			urow := U[col*n+i2 : (col+1)*n]
			for k := range w {
				if e := errs[k][col-i1]; e != 0 {
					axpyNeg(w[k][i2:], e, urow)
				}
			}
		}
	}
}

// params returns the fp16 scale and integer zero of a group and their
// float32 values, exactly as rtn.Quantizer.EncodeMatrix computes them.
func params(grp []float64, bits int) (hs uint16, hz uint8, scale, zero float32) {
	lo, hi := float32(0), float32(0)
	for _, v := range grp {
		lo = min(lo, float32(v))
		hi = max(hi, float32(v))
	}
	hs, scale, hz = rtn.RangeParams(lo, hi, bits)
	return hs, hz, scale, float32(hz)
}

// axpyNeg computes y -= a*x over len(y).
func axpyNeg(y []float64, a float64, x []float64) {
	x = x[:len(y)]
	for i := range y {
		y[i] -= a * x[i]
	}
}
