package entropy

import (
	"fmt"
	"math"
)

// Quantize computes s = round_half_even(y - median_c) in float32 arithmetic
// for each latent (channel of y[i] is i % C) into dst (reused when large
// enough) and returns dst[:len(y)]. A non-finite latent or one with
// |s| > MaxMagnitude is ErrRange.
func Quantize(t *Tables, y []float32, dst []int32) ([]int32, error) {
	if cap(dst) < len(y) {
		dst = make([]int32, len(y))
	}
	dst = dst[:len(y)]
	C := len(t.Channels)
	c := 0
	for i, v := range y {
		d := v - t.Channels[c].Median // float32 subtraction, as the format says
		r := math.RoundToEven(float64(d))
		if !(r >= -MaxMagnitude && r <= MaxMagnitude) { // also catches NaN
			return nil, fmt.Errorf("%w: latent %d (channel %d) = %v", ErrRange, i, c, v)
		}
		dst[i] = int32(r)
		c++
		if c == C {
			c = 0
		}
	}
	return dst, nil
}

// Dequantize computes y_hat = float32(s) + median_c (channel of s[i] is
// i % C) into dst (reused when large enough) and returns dst[:len(s)].
func Dequantize(t *Tables, s []int32, dst []float32) []float32 {
	if cap(dst) < len(s) {
		dst = make([]float32, len(s))
	}
	dst = dst[:len(s)]
	C := len(t.Channels)
	c := 0
	for i, v := range s {
		dst[i] = float32(v) + t.Channels[c].Median
		c++
		if c == C {
			c = 0
		}
	}
	return dst
}
