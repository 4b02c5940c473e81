package ldlq

import (
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
)

// cholBlock is the panel width of the blocked Cholesky factorization.
const cholBlock = 64

// Cholesky factors the symmetric positive definite n x n matrix a (row-major;
// only the lower triangle is read) in place into its lower Cholesky factor C
// with a = C C^T and a positive diagonal. The strict upper triangle is set to
// zero. It is a right-looking blocked algorithm whose panel solve and
// trailing update run on up to workers goroutines (<= 0 means GOMAXPROCS);
// the result does not depend on workers. A non-positive or non-finite pivot
// is ErrNotPD, naming the column.
func Cholesky(a []float64, n, workers int) error {
	if n < 0 || len(a) != n*n {
		return fmt.Errorf("%w: cholesky of %d values as %d x %d", ErrShape, len(a), n, n)
	}
	for s := 0; s < n; s += cholBlock {
		e := min(s+cholBlock, n)
		// 1. Factor the diagonal block a[s:e, s:e] (already updated by
		// every earlier panel), row by row.
		for i := s; i < e; i++ {
			ri := a[i*n : i*n+n]
			for j := s; j <= i; j++ {
				rj := a[j*n : j*n+n]
				v := ri[j] - dot(ri[s:j], rj[s:j])
				if j == i {
					if !(v > 0) || math.IsInf(v, 0) {
						return fmt.Errorf("%w: pivot %g at column %d", ErrNotPD, v, i)
					}
					ri[i] = math.Sqrt(v)
				} else {
					ri[j] = v / rj[j]
				}
			}
		}
		if e == n {
			break
		}
		// 2. Panel: rows below solve x C_kk^T = a[i, s:e]. 3. Trailing
		// update of the lower triangle a[i, e:i+1] -= x . C[j, s:e]. Row i
		// of both steps only needs row i and rows < i of the panel, so each
		// row is done by one goroutine after the panel row of every j < i
		// it reads is final: do the panel for all rows first, then the
		// update.
		parallelRows(e, n, workers, func(i int) {
			ri := a[i*n : i*n+n]
			for j := s; j < e; j++ {
				rj := a[j*n : j*n+n]
				ri[j] = (ri[j] - dot(ri[s:j], rj[s:j])) / rj[j]
			}
		})
		parallelRows(e, n, workers, func(i int) {
			ri := a[i*n : i*n+n]
			x := ri[s:e]
			for j := e; j <= i; j++ {
				ri[j] -= dot(x, a[j*n+s:j*n+e])
			}
		})
	}
	for i := 0; i < n; i++ {
		clear(a[i*n+i+1 : i*n+n])
	}
	return nil
}

// parallelRows calls fn(i) for every i in [lo, hi) on up to workers
// goroutines, handing out rows from the bottom (the longest) first.
func parallelRows(lo, hi, workers int, fn func(i int)) {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	workers = min(workers, hi-lo)
	if workers <= 1 {
		for i := hi - 1; i >= lo; i-- {
			fn(i)
		}
		return
	}
	var next atomic.Int64
	next.Store(int64(hi))
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(-1))
				if i < lo {
					return
				}
				fn(i)
			}
		}()
	}
	wg.Wait()
}

// dot returns sum x[i]*y[i] over len(x) (y at least as long), in a fixed
// order: four partial sums combined at the end.
func dot(x, y []float64) float64 {
	y = y[:len(x)]
	var s0, s1, s2, s3 float64
	i := 0
	for ; i+4 <= len(x); i += 4 {
		s0 += x[i] * y[i]
		s1 += x[i+1] * y[i+1]
		s2 += x[i+2] * y[i+2]
		s3 += x[i+3] * y[i+3]
	}
	for ; i < len(x); i++ {
		s0 += x[i] * y[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// axpy computes y += a*x over len(x).
func axpy(y []float64, a float64, x []float64) {
	y = y[:len(x)]
	for i, v := range x {
		y[i] += a * v
	}
}

// InvertLower returns the inverse of the n x n lower triangular matrix c
// (row-major, positive diagonal) as a new row-major lower triangular matrix.
// Columns are solved independently (c x = e_j by forward substitution) on
// up to workers goroutines.
func InvertLower(c []float64, n, workers int) ([]float64, error) {
	if n < 0 || len(c) != n*n {
		return nil, fmt.Errorf("%w: %d values as %d x %d", ErrShape, len(c), n, n)
	}
	for i := 0; i < n; i++ {
		if !(c[i*n+i] > 0) || math.IsInf(c[i*n+i], 0) {
			return nil, fmt.Errorf("%w: diagonal %g at %d", ErrNotPD, c[i*n+i], i)
		}
	}
	out := make([]float64, n*n)
	parallelRows(0, n, workers, func(j int) {
		// x[i] for i >= j, kept contiguous from j.
		x := make([]float64, n-j)
		x[0] = 1 / c[j*n+j]
		for i := j + 1; i < n; i++ {
			x[i-j] = -dot(x[:i-j], c[i*n+j:i*n+i]) / c[i*n+i]
		}
		for i := j; i < n; i++ {
			out[i*n+j] = x[i-j]
		}
	})
	return out, nil
}
