package ldlq

import (
	"fmt"
	"math"
)

// FitRowScales returns, for each row r of the m x n matrices W and U
// (row-major), the scale s minimizing the proxy loss of that row,
// (w - s*u) H (w - s*u)^T, which is <w, u>_H / <u, u>_H with
// <a, b>_H = a H b^T (H n x n as given; nil = identity: least squares).
// It is the closed-form "row-scale tuning after coding": U is a coded
// row up to its scale, so multiplying the stored scale by the returned
// gain (s over the current scale) never raises the proxy loss. A row with
// <u, u>_H = 0 (or a non-finite ratio) gets NaN: keep its scale.
func FitRowScales(W, U []float32, m, n int, H []float64) ([]float64, error) {
	if m < 1 || n < 1 || len(W) != m*n || len(U) != m*n || (H != nil && len(H) != n*n) {
		return nil, fmt.Errorf("%w: row scales of %d/%d values as %d x %d (H %d)", ErrShape, len(W), len(U), m, n, len(H))
	}
	s := make([]float64, m)
	w, u, hu := make([]float64, n), make([]float64, n), make([]float64, n)
	for r := 0; r < m; r++ {
		for c := 0; c < n; c++ {
			w[c], u[c] = float64(W[r*n+c]), float64(U[r*n+c])
		}
		if H == nil {
			copy(hu, u)
		} else {
			for i := 0; i < n; i++ {
				hu[i] = dot(u, H[i*n:(i+1)*n])
			}
		}
		num, den := dot(w, hu), dot(u, hu)
		s[r] = num / den
		if den <= 0 || math.IsNaN(s[r]) || math.IsInf(s[r], 0) {
			s[r] = math.NaN()
		}
	}
	return s, nil
}
