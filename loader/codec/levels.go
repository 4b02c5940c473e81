package codec

import (
	"math"
	"sort"
)

// NumLevels is the number of quality levels of the method (nwc-method.md
// step 3): 0 (most columns) to 3 (the most important ones).
const NumLevels = 4

// levelFractions are the importance fractions of the method: the top 0.1 %
// of input columns by diag(H) get level 3, the next 1 % level 2, the next
// 10 % level 1, the rest level 0.
var levelFractions = [NumLevels - 1]float64{0.001, 0.01, 0.1}

// levelRateWeights are the method's rate weights c[q] of quality levels
// 0..3 (the training loss is lambda*MSE/sigma^2 + c[q]*rate).
var levelRateWeights = [NumLevels]float64{3.4, 1.2, 0.1, 0.05}

// LevelStepRatio is the quantization step of level q relative to level 0
// that the method's rate weights imply at high rate: minimizing
// step^2/12 + c*(h - log2 step) gives step proportional to sqrt(c), so the
// ratio is sqrt(c[q]/c[0]) (1, 0.594, 0.171, 0.121). The network-free nwc
// codecs learn close to these ratios on their own (nwc-gain-l100's mean
// per-level gains: 1, 0.62, 0.18, 0.13).
func LevelStepRatio(q int) float64 {
	return math.Sqrt(levelRateWeights[q] / levelRateWeights[0])
}

// Levels assigns quality levels to the n input columns of a matrix from
// diag(H) (H is n x n, row-major): the levelFractions of the columns with
// the largest diagonal, ties broken by column order. A nil H (no
// calibration data) gives level 0 everywhere.
func Levels(h []float64, n int) []uint8 {
	lv := make([]uint8, n)
	if h == nil {
		return lv
	}
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return h[idx[a]*n+idx[a]] > h[idx[b]*n+idx[b]] })
	pos := 0
	for l := NumLevels - 1; l >= 1; l-- {
		cnt := int(math.Ceil(levelFractions[NumLevels-1-l] * float64(n)))
		for i := 0; i < cnt && pos < n; i++ {
			lv[idx[pos]] = uint8(l)
			pos++
		}
	}
	return lv
}

// AppendLevels appends the level map of the payload formats that carry one
// (nwc, ecsq version 2): ceil(n/4) bytes, the level of column j in bits
// 2*(j%4) of byte j/4, padding bits zero.
func AppendLevels(dst []byte, lv []uint8) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, (len(lv)+3)/4)...)
	for j, l := range lv {
		dst[start+j/4] |= (l & 3) << (2 * (j % 4))
	}
	return dst
}

// ReadLevels reads the n column levels of a level map (AppendLevels) from
// the first ceil(n/4) bytes of p, which the caller has checked are there.
func ReadLevels(p []byte, n int) []uint8 {
	lv := make([]uint8, n)
	for j := range lv {
		lv[j] = p[j/4] >> (2 * (j % 4)) & 3
	}
	return lv
}
