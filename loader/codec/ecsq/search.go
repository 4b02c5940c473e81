package ecsq

import (
	"context"
	"fmt"
	"math"

	"github.com/nwc-project/nwc/ortcodec/ldlq"
)

// SearchOptions bounds StepForBits.
type SearchOptions struct {
	// Tolerance in bits/weight: the search stops when the real rate is this
	// close to the target (0 = 0.002).
	Tolerance float64
	// MaxEvals bounds the number of full encodes (0 = 16).
	MaxEvals int
}

// StepForBits searches the step whose real coded rate, 8*len(payload)/(m*n)
// with every byte of side information counted, is closest to bits, by
// actually encoding (LDLQ included) at each trial step. It starts from the
// high-rate Gaussian estimate log2(step) = 2.047 - bits (the normalized rows
// have unit RMS), then takes secant steps in log2(step), falling back to
// bisection once the target is bracketed. It returns the encode closest to
// the target among those tried. The rate is very nearly, but not strictly,
// monotone in the step (LDLQ feedback and the tables interact), which the
// bracketing tolerates.
func StepForBits(ctx context.Context, W []float32, m, n int, f *ldlq.Factor, bits float64, opts Options, so SearchOptions) (*Result, error) {
	if !(bits > 0 && bits <= 32) {
		return nil, fmt.Errorf("ecsq: target %v bits/weight outside (0, 32]", bits)
	}
	if so.Tolerance <= 0 {
		so.Tolerance = 0.002
	}
	if so.MaxEvals <= 0 {
		so.MaxEvals = 16
	}
	if f == nil {
		var err error
		if f, err = ldlq.NewFactor(nil, n, opts.LDLQ); err != nil {
			return nil, err
		}
	}
	xMin, xMax := math.Log2(MinStep), math.Log2(MaxStep)
	var best *Result
	eval := func(x float64) (float64, error) {
		res, err := EncodeFactor(ctx, W, m, n, f, math.Exp2(x), opts)
		if err != nil {
			return 0, err
		}
		if best == nil || math.Abs(res.Bits-bits) < math.Abs(best.Bits-bits) {
			best = res
		}
		return res.Bits, nil
	}
	// Bracket: lo has rate >= target (small step), hi has rate < target.
	loX, hiX := math.Inf(-1), math.Inf(1)
	x := min(max(2.047-bits, xMin), xMax)
	prevX, prevR := math.NaN(), math.NaN()
	for k := 0; k < so.MaxEvals; k++ {
		r, err := eval(x)
		if err != nil {
			return nil, err
		}
		if math.Abs(r-bits) <= so.Tolerance {
			break
		}
		if r >= bits {
			loX = max(loX, x)
		} else {
			hiX = min(hiX, x)
		}
		slope := -1.0 // d rate / d log2(step) at high rate
		if !math.IsNaN(prevX) && x != prevX {
			if s := (r - prevR) / (x - prevX); s < -0.05 && s > -4 {
				slope = s
			}
		}
		prevX, prevR = x, r
		nx := x + (bits-r)/slope
		if !math.IsInf(loX, 0) && !math.IsInf(hiX, 0) {
			if hiX-loX < 1e-6 {
				break
			}
			if !(nx > loX && nx < hiX) {
				nx = (loX + hiX) / 2
			}
		}
		nx = min(max(nx, xMin), xMax)
		if nx == x {
			break // pinned at a step limit
		}
		x = nx
	}
	return best, nil
}
