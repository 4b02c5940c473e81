// Package testmat is test support for the ortcodec quantizers: seeded random
// weight matrices and positive-(semi)definite Hessians H = XᵀX. It is
// imported only from _test.go files.
package testmat

import (
	"math"
	"math/rand/v2"
)

// CorrelatedH returns the n×n row-major H = XᵀX for X = G B + 0.1 noise
// (N samples, rank-k structure): strongly correlated inputs, as real
// activations are.
func CorrelatedH(n, k, N int, seed uint64) []float64 {
	rng := rand.New(rand.NewPCG(seed, 7))
	B := make([]float64, k*n)
	for i := range B {
		B[i] = rng.NormFloat64()
	}
	H := make([]float64, n*n)
	x := make([]float64, n)
	g := make([]float64, k)
	for s := 0; s < N; s++ {
		for i := range g {
			g[i] = rng.NormFloat64()
		}
		for j := 0; j < n; j++ {
			v := 0.1 * rng.NormFloat64()
			for i := 0; i < k; i++ {
				v += g[i] * B[i*n+j]
			}
			x[j] = v
		}
		for i := 0; i < n; i++ {
			for j := 0; j < n; j++ {
				H[i*n+j] += x[i] * x[j]
			}
		}
	}
	return H
}

// LLMW returns an m×n row-major matrix of LLM-like weights: per-row scales
// 0.02·e^(0.3·N(0,1)), Gaussian entries, and on average one entry in
// outlierEvery multiplied by outlierMul.
func LLMW(m, n int, seed uint64, outlierEvery int, outlierMul float64) []float32 {
	rng := rand.New(rand.NewPCG(seed, 1))
	W := make([]float32, m*n)
	for r := 0; r < m; r++ {
		s := 0.02 * math.Exp(0.3*rng.NormFloat64())
		for c := 0; c < n; c++ {
			v := rng.NormFloat64()
			if rng.IntN(outlierEvery) == 0 {
				v *= outlierMul
			}
			W[r*n+c] = float32(s * v)
		}
	}
	return W
}

// GaussW returns m·n standard normal float32 values.
func GaussW(m, n int, seed uint64) []float32 {
	rng := rand.New(rand.NewPCG(seed, 1))
	W := make([]float32, m*n)
	for i := range W {
		W[i] = float32(rng.NormFloat64())
	}
	return W
}
