package ecsq

import (
	"encoding/binary"
	"fmt"

	"github.com/nwc-project/nwc/ortcodec/entropy"
)

// Model limits.
const (
	// Precision of the stored CDF: frequencies sum to 1<<Precision.
	Precision = 16
	// MaxTableSymbols bounds L, the in-range symbols of the stored table;
	// rarer or farther values are escaped.
	MaxTableSymbols = 4096
	// histWindow: values with |v| <= histWindow are counted one by one;
	// farther ones are always escaped.
	histWindow = 1 << 16
)

// model is the per-tensor static model: symbols offset..offset+L-1 in range
// with freq[0..L-1], escape with freq[L].
type model struct {
	offset int64
	freq   []int64 // L+1 entries, each >= 1, sum 1<<Precision
}

// buildModel chooses the in-range window and quantizes the histogram of
// codes to frequencies (every one >= 1) summing to 1<<Precision, minimizing
// the coded size of these very codes (greedy on the exact cost).
func buildModel(codes []int32) model {
	const M = int64(1) << Precision
	N := int64(len(codes))
	hist := make([]int64, 2*histWindow+1)
	for _, v := range codes {
		if v >= -histWindow && v <= histWindow {
			hist[int(v)+histWindow]++
		}
	}
	// In range: values whose probability is at least 2^-Precision (they
	// would get a frequency >= 1 on their own), from the smallest to the
	// largest such value; the window is cut to MaxTableSymbols around the
	// most mass.
	lo, hi, mode := -1, -1, 0
	for i, c := range hist {
		if c > hist[mode] {
			mode = i
		}
		if c > 0 && c*M >= N {
			if lo < 0 {
				lo = i
			}
			hi = i
		}
	}
	if lo < 0 {
		lo, hi = mode, mode
	}
	if hi-lo+1 > MaxTableSymbols {
		// Sliding window of MaxTableSymbols with the largest count.
		var s, best int64
		bestLo := lo
		for i := lo; i <= hi; i++ {
			s += hist[i]
			if i-lo >= MaxTableSymbols {
				s -= hist[i-MaxTableSymbols]
			}
			if i-lo+1 >= MaxTableSymbols && s > best {
				best, bestLo = s, i-MaxTableSymbols+1
			}
		}
		lo, hi = bestLo, bestLo+MaxTableSymbols-1
	}
	L := hi - lo + 1
	counts := make([]int64, L+1)
	var in int64
	for i := 0; i < L; i++ {
		counts[i] = hist[lo+i]
		in += counts[i]
	}
	counts[L] = N - in
	return model{offset: int64(lo - histWindow), freq: normalize(counts, M)}
}

// normalize turns counts into frequencies >= 1 summing to M
// (entropy.NormalizeFreqs).
func normalize(counts []int64, M int64) []int64 { return entropy.NormalizeFreqs(counts, M) }

// appendModel serializes the model: zigzag varint offset, uvarint L, L+1
// uvarint frequencies.
func appendModel(dst []byte, md model) []byte {
	dst = binary.AppendVarint(dst, md.offset)
	dst = binary.AppendUvarint(dst, uint64(len(md.freq)-1))
	for _, f := range md.freq {
		dst = binary.AppendUvarint(dst, uint64(f))
	}
	return dst
}

// tables builds the entropy coder's one-channel tables.
func (md model) tables() (*entropy.Tables, error) {
	cdf := make([]int64, len(md.freq)+1)
	for i, f := range md.freq {
		cdf[i+1] = cdf[i] + f
	}
	return entropy.NewTables(Precision, []float32{0}, []int64{md.offset}, [][]int64{cdf})
}

// parseModel reads a model from the front of *p, validating it fully.
func parseModel(p *[]byte) (model, error) {
	off, err := readVarint(p)
	if err != nil {
		return model{}, err
	}
	L, err := readUvarint(p)
	if err != nil {
		return model{}, err
	}
	if L < 1 || L > MaxTableSymbols {
		return model{}, fmt.Errorf("%w: table of %d symbols", ErrCorrupt, L)
	}
	if off < -entropy.MaxOffset || off+int64(L)-1 > entropy.MaxOffset {
		return model{}, fmt.Errorf("%w: table offset %d", ErrCorrupt, off)
	}
	md := model{offset: off, freq: make([]int64, L+1)}
	var sum uint64
	for i := range md.freq {
		f, err := readUvarint(p)
		if err != nil {
			return model{}, err
		}
		if f < 1 || f > 1<<Precision {
			return model{}, fmt.Errorf("%w: frequency %d of symbol %d", ErrCorrupt, f, i)
		}
		sum += f
		md.freq[i] = int64(f)
	}
	if sum != 1<<Precision {
		return model{}, fmt.Errorf("%w: frequencies sum to %d, want %d", ErrCorrupt, sum, 1<<Precision)
	}
	return md, nil
}

// readUvarint reads one canonical (minimal) uvarint.
func readUvarint(p *[]byte) (uint64, error) {
	v, w := binary.Uvarint(*p)
	if w <= 0 || w != len(binary.AppendUvarint(nil, v)) {
		return 0, fmt.Errorf("%w: bad varint", ErrCorrupt)
	}
	*p = (*p)[w:]
	return v, nil
}

// readVarint reads one canonical zigzag varint.
func readVarint(p *[]byte) (int64, error) {
	v, w := binary.Varint(*p)
	if w <= 0 || w != len(binary.AppendVarint(nil, v)) {
		return 0, fmt.Errorf("%w: bad varint", ErrCorrupt)
	}
	*p = (*p)[w:]
	return v, nil
}
