package codec

import (
	"math"

	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/ortcodec/ldlq"
)

// TuneRowScales is the closed-form row-scale tuning after coding
// (Config.TuneRowScales) shared by the codecs that store one fp16 scale
// per row: W is the m x n original, U the coded matrix before its row
// scales (decoded row r = U[r] * scale_r), H the n x n calibration matrix
// (nil: least squares). Each scale is replaced by the fp16 value of the
// one minimizing the row's proxy loss (ldlq.FitRowScales); a row whose fit
// is not a positive finite number keeps its scale. It returns how many
// scales changed.
func TuneRowScales(W, U []float32, m, n int, H []float64, scales []uint16) (int, error) {
	fit, err := ldlq.FitRowScales(W, U, m, n, H)
	if err != nil {
		return 0, err
	}
	changed := 0
	for r, s := range fit {
		if !(s > 0) || math.IsInf(s, 0) {
			continue
		}
		if h := ScaleF16(s); h != scales[r] {
			scales[r] = h
			changed++
		}
	}
	return changed, nil
}

// ScaleF16 stores a positive row scale as fp16: the nearest value, but
// never 0 (the smallest subnormal instead) nor infinite (65504 instead).
func ScaleF16(s float64) uint16 {
	if s >= 65504 {
		return 0x7bff
	}
	if h := tensor.F32ToF16(float32(s)); h != 0 {
		return h
	}
	return 1
}
