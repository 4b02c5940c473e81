// Package ldlq implements LDLQ error feedback (QuIP/QuIP#, as used by the
// NWC method): a caller-supplied quantizer codes a weight matrix one block
// of input columns at a time, from the last block to the first, and the
// error already made on later columns is fed, through the block LDL factor
// of the input Hessian proxy H = X^T X, into the block about to be coded.
//
// # Conventions
//
// W is m x n, row-major (m output rows, n input columns), as a linear
// layer's weight y = W x. H is n x n (over inputs). Quantization error of a
// row r, Δ_r = W_r - What_r, costs Δ_r H Δ_r^T on the layer output
// (ProxyLoss sums it over rows).
//
// Preprocessing: H is symmetrized ((H + H^T)/2), divided by the mean of its
// diagonal, and Damping*I is added (default 0.01).
//
// Block LDL with column blocks k = [s_k, e_k) of BlockSize columns (the last
// may be shorter): Cholesky H = C C^T (C lower, positive diagonal), then
// L = C blockdiag(C_kk)^-1, which is unit block-lower-triangular (L_kk = I),
// and D = blockdiag(C_kk C_kk^T), so H = L D L^T.
//
// Feedback: for blocks from last to first,
//
//	w = W[:, s:e] + (W[:, e:] - What[:, e:]) L[e:, s:e]
//	What[:, s:e] = quantize(s, e, w)
//
// Then E = (W - What) L has E[:, s:e] = w - What[:, s:e] (because L_kk = I
// and L[j, k] = 0 above the diagonal blocks), so the proxy loss is
// sum_k E_k D_k E_k^T: each block only pays for its own rounding error of
// the fed-back target w, measured in D_k. With H = I (or nil), L = I and the
// feedback is exactly zero: LDLQ reduces to independent quantization of the
// blocks, bit for bit.
package ldlq

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
)

// Defaults.
const (
	DefaultBlockSize = 128
	// FeedbackBlock is the block the nwc and ecsq codecs use when
	// quantizing through LDLQ. Measured on smollm2-135m (nwc-w128d2-l300,
	// --bits 4, 3.90 bits/weight, 4 windows x 512 of WikiText-2, mean KL vs
	// the reference): block 128: 0.1146, block 16: 0.1014, block 1: 0.1053
	// (2.5x the encode time of 16). docs/QUANTIZERS.md.
	FeedbackBlock  = 16
	DefaultDamping = 0.01
	// DefaultMaxDamping is the largest relative damping Factor tries (by
	// factors of 10 from Damping) before giving up on a non-PD H.
	DefaultMaxDamping = 1.0
	// MaxN bounds n (the factor takes 8*n*n bytes).
	MaxN = 1 << 15
)

// Errors, wrapped with context; test with errors.Is.
var (
	// ErrShape: sizes are inconsistent, zero, negative or too large.
	ErrShape = errors.New("ldlq: bad shape")
	// ErrNotFinite: W, H or a quantizer's output holds NaN or Inf.
	ErrNotFinite = errors.New("ldlq: value not finite")
	// ErrNotPD: H is not positive definite even with the largest damping
	// allowed, or its diagonal mean is not positive.
	ErrNotPD = errors.New("ldlq: H not positive definite")
)

// Options configures the factorization and the feedback loop. The zero value
// means the defaults.
type Options struct {
	// BlockSize is the number of columns per block (0 = 128).
	BlockSize int
	// Damping is added to the diagonal of H after dividing H by its mean
	// diagonal (0 = 0.01; negative is an error).
	Damping float64
	// MaxDamping: when H + Damping*I is not positive definite, Damping is
	// multiplied by 10 until the factorization succeeds or it would exceed
	// MaxDamping (0 = 1.0). The damping used and a note are in the Factor.
	MaxDamping float64
	// Workers bounds the goroutines of the factorization and the feedback
	// products (0 = GOMAXPROCS). Results do not depend on it.
	Workers int
}

func (o Options) withDefaults() (Options, error) {
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
	if o.BlockSize < 1 || o.BlockSize > MaxN {
		return o, fmt.Errorf("%w: block size %d", ErrShape, o.BlockSize)
	}
	if !(o.Damping > 0) || math.IsInf(o.Damping, 0) || !(o.MaxDamping >= o.Damping) || math.IsInf(o.MaxDamping, 0) {
		return o, fmt.Errorf("ldlq: damping %g / max damping %g: want 0 < damping <= max damping, finite", o.Damping, o.MaxDamping)
	}
	return o, nil
}

// BlockQuantizer quantizes the fed-back target w of columns [s, e) (m rows x
// (e-s) columns, row-major) and returns the reconstruction, same layout. It
// is called once per block, from the last block to the first, never
// concurrently; it may keep state (codes) of its own. It must not keep w.
type BlockQuantizer func(s, e int, w []float32) ([]float32, error)

// Factor is the block LDL factor of a preprocessed H. It is immutable and
// safe for concurrent use; factor H once and reuse it for every weight that
// reads the same input (q/k/v, gate/up) and every rate.
type Factor struct {
	// N is the number of input columns, BlockSize the block width.
	N, BlockSize int
	// Damping is the relative damping actually used (Options.Damping, or
	// more when H needed it; then Note says so).
	Damping float64
	// Note is empty unless the damping had to be raised.
	Note string

	identity bool      // H was nil: no feedback
	l        []float64 // n x n row-major; only L[i, j] with i >= e(block of j) is read
	workers  int
}

// Identity reports whether f is the identity factor (H was nil).
func (f *Factor) Identity() bool { return f.identity }

// L returns L[i, j] (0 above the diagonal blocks, 1/0 inside them).
func (f *Factor) L(i, j int) float64 {
	bi, bj := i/f.BlockSize, j/f.BlockSize
	switch {
	case bi < bj:
		return 0
	case bi == bj:
		if i == j {
			return 1
		}
		return 0
	case f.identity:
		return 0
	}
	return f.l[i*f.N+j]
}

// NewFactor preprocesses H (n x n row-major; nil means the identity) and
// computes its block LDL factor. H is not modified.
func NewFactor(H []float64, n int, opts Options) (*Factor, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if n < 1 || n > MaxN {
		return nil, fmt.Errorf("%w: n = %d outside [1, %d]", ErrShape, n, MaxN)
	}
	f := &Factor{N: n, BlockSize: min(opts.BlockSize, n), Damping: opts.Damping, workers: opts.Workers}
	if H == nil {
		f.identity = true
		return f, nil
	}
	if len(H) != n*n {
		return nil, fmt.Errorf("%w: H has %d values, want %d x %d", ErrShape, len(H), n, n)
	}
	var tr float64
	for i, v := range H {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, fmt.Errorf("%w: H[%d, %d] = %v", ErrNotFinite, i/n, i%n, v)
		}
	}
	for i := 0; i < n; i++ {
		tr += H[i*n+i]
	}
	mean := tr / float64(n)
	if !(mean > 0) || math.IsInf(mean, 0) {
		return nil, fmt.Errorf("%w: mean diagonal %g (no calibration signal? use H = nil)", ErrNotPD, mean)
	}
	a := make([]float64, n*n)
	for damp := opts.Damping; damp <= opts.MaxDamping*(1+1e-12); damp *= 10 {
		for i := 0; i < n; i++ {
			for j := 0; j <= i; j++ {
				a[i*n+j] = (H[i*n+j] + H[j*n+i]) / (2 * mean)
			}
			a[i*n+i] += damp
		}
		err = Cholesky(a, n, opts.Workers)
		if err == nil {
			if damp != opts.Damping {
				f.Note = fmt.Sprintf("H + %g*I not positive definite; damping raised to %g", opts.Damping, damp)
			}
			f.Damping = damp
			break
		}
		if !errors.Is(err, ErrNotPD) {
			return nil, err
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%w (tried damping %g to %g)", err, opts.Damping, opts.MaxDamping)
	}
	// L[e:, s:e] = C[e:, s:e] C_kk^-1 for every block k, in place: each row
	// i >= e solves x C_kk = C[i, s:e] by back substitution (x C_kk = c is
	// C_kk^T x^T = c^T, upper triangular).
	bs := f.BlockSize
	for s := 0; s < n; s += bs {
		e := min(s+bs, n)
		if e == n {
			break
		}
		parallelRows(e, n, opts.Workers, func(i int) {
			r := a[i*n+s : i*n+e]
			for j := e - s - 1; j >= 0; j-- {
				cj := a[(s+j)*n+s : (s+j)*n+s+j+1] // row s+j of C_kk, columns 0..j
				x := r[j] / cj[j]
				r[j] = x
				axpy(r[:j], -x, cj[:j])
			}
		})
	}
	f.l = a
	return f, nil
}

// Quantize runs LDLQ with a fresh factor of H (see NewFactor) and returns
// What (m x n, row-major).
func Quantize(ctx context.Context, W []float32, m, n int, H []float64, opts Options, q BlockQuantizer) ([]float32, error) {
	f, err := NewFactor(H, n, opts)
	if err != nil {
		return nil, err
	}
	return f.Quantize(ctx, W, m, q)
}

// MaxWeights bounds m*n of one matrix.
const MaxWeights = 1 << 34

// Quantize drives q over the column blocks of W (m x n, row-major, n =
// f.N) from last to first with the feedback of the package comment, and
// returns What (m x n). q's outputs must be finite.
func (f *Factor) Quantize(ctx context.Context, W []float32, m int, q BlockQuantizer) ([]float32, error) {
	n := f.N
	if m < 1 || int64(m)*int64(n) > MaxWeights || len(W) != m*n {
		return nil, fmt.Errorf("%w: W has %d values, want m = %d x n = %d", ErrShape, len(W), m, n)
	}
	for i, v := range W {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return nil, fmt.Errorf("%w: W[%d, %d] = %v", ErrNotFinite, i/n, i%n, v)
		}
	}
	bs := f.BlockSize
	What := make([]float32, m*n)
	var delta []float64 // m x n, W - What, filled for columns >= e
	if !f.identity {
		delta = make([]float64, m*n)
	}
	last := (n - 1) / bs * bs
	for s := last; s >= 0; s -= bs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		e := min(s+bs, n)
		b := e - s
		w := make([]float32, m*b)
		if f.identity || e == n {
			for r := 0; r < m; r++ {
				copy(w[r*b:(r+1)*b], W[r*n+s:r*n+e])
			}
		} else {
			f.feedback(w, W, delta, m, s, e)
		}
		out, err := q(s, e, w)
		if err != nil {
			return nil, fmt.Errorf("ldlq: block [%d, %d): %w", s, e, err)
		}
		if len(out) != m*b {
			return nil, fmt.Errorf("%w: quantizer returned %d values for block [%d, %d) of %d x %d", ErrShape, len(out), s, e, m, b)
		}
		for i, v := range out {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return nil, fmt.Errorf("%w: quantizer output %v at row %d, column %d", ErrNotFinite, v, i/b, s+i%b)
			}
		}
		for r := 0; r < m; r++ {
			copy(What[r*n+s:r*n+e], out[r*b:(r+1)*b])
			if delta != nil {
				for c := s; c < e; c++ {
					delta[r*n+c] = float64(W[r*n+c]) - float64(What[r*n+c])
				}
			}
		}
	}
	return What, nil
}

// feedback writes w = W[:, s:e] + delta[:, e:] L[e:, s:e] (rows in
// parallel; each row's sum runs over j = e..n-1 in order).
func (f *Factor) feedback(w, W []float32, delta []float64, m, s, e int) {
	n, b := f.N, e-s
	workers := min(f.workers, m)
	var wg sync.WaitGroup
	per := (m + workers - 1) / workers
	for lo := 0; lo < m; lo += per {
		hi := min(lo+per, m)
		wg.Add(1)
		go func() {
			defer wg.Done()
			acc := make([]float64, b)
			for r := lo; r < hi; r++ {
				clear(acc)
				dr := delta[r*n : (r+1)*n]
				for j := e; j < n; j++ {
					if d := dr[j]; d != 0 {
						axpy(acc, d, f.l[j*n+s:j*n+e])
					}
				}
				for c := 0; c < b; c++ {
					w[r*b+c] = float32(float64(W[r*n+s+c]) + acc[c])
				}
			}
		}()
	}
	wg.Wait()
}

// ProxyLoss returns tr((W - What) H (W - What)^T) / (m*n) for m x n
// row-major W and What and n x n H (nil = identity: the mean squared
// error). H is used as given (not normalized or damped).
func ProxyLoss(W, What []float32, m, n int, H []float64) (float64, error) {
	if m < 1 || n < 1 || len(W) != m*n || len(What) != m*n || (H != nil && len(H) != n*n) {
		return 0, fmt.Errorf("%w: proxy loss of %d/%d values as %d x %d (H %d)", ErrShape, len(W), len(What), m, n, len(H))
	}
	d := make([]float64, n)
	var tot float64
	for r := 0; r < m; r++ {
		for c := 0; c < n; c++ {
			d[c] = float64(W[r*n+c]) - float64(What[r*n+c])
		}
		if H == nil {
			tot += dot(d, d)
			continue
		}
		for i := 0; i < n; i++ {
			if d[i] != 0 {
				tot += d[i] * dot(d, H[i*n:(i+1)*n])
			}
		}
	}
	return tot / float64(m*n), nil
}
