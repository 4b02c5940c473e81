package entropy

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
)

// Format is the value of the "format" field of an entropy.json file.
const Format = "nwc-cdf-v1"

// Limits on what a table file may describe. They keep hostile files from
// costing much memory and keep every intermediate value of the coder well
// inside its integer types.
const (
	// MinPrecision and MaxPrecision bound the CDF precision (total frequency
	// 1<<precision). The 32-bit state with 16-bit renormalization needs
	// precision <= 16.
	MinPrecision = 8
	MaxPrecision = 16
	// MaxSymbols bounds the number of entries of one CDF row minus one
	// (in-range symbols plus the escape symbol).
	MaxSymbols = 1 << 16
	// MaxChannels bounds the number of channels of one table set.
	MaxChannels = 1024
	// MaxOffset bounds |offset| of a channel.
	MaxOffset = 1 << 20
	// MaxMagnitude bounds |s| of any coded symbol value (in range or escaped).
	// Quantize reports ErrRange beyond it and the decoder treats a larger
	// escaped value as corrupt.
	MaxMagnitude = 1 << 30
)

// Channel is the integer model of one latent channel.
type Channel struct {
	// Median is the float32 the channel's symbols are centred on.
	Median float32
	// Offset is the symbol value of CDF index 0.
	Offset int32
	// CDF has L+2 entries: L in-range symbols, then the escape symbol.
	CDF []uint32

	// bucket[j] is the CDF index of the symbol covering slot
	// j<<(precision-bucketBits): the decoder starts there and scans forward
	// (at most 1<<(precision-bucketBits) steps). A table of 1<<bucketBits
	// entries per channel stays in L1 cache, unlike a full slot table.
	bucket []uint16
	// n is L, the number of in-range symbols; index n is the escape.
	n int32
}

// NumSymbols returns L, the number of in-range symbols (the escape excluded).
func (c *Channel) NumSymbols() int { return int(c.n) }

// Tables is a validated set of per-channel integer CDFs with precomputed
// decode lookup tables. It is immutable after loading and safe for
// concurrent use.
type Tables struct {
	// Precision: every CDF ends at 1<<Precision.
	Precision uint
	Channels  []Channel
}

// NumChannels returns the number of channels C. Symbol i of an interleaved
// sequence belongs to channel i % C.
func (t *Tables) NumChannels() int { return len(t.Channels) }

type fileJSON struct {
	Format    string        `json:"format"`
	Precision int           `json:"precision"`
	Channels  []channelJSON `json:"channels"`
}

type channelJSON struct {
	MedianBits *uint32 `json:"median_f32_bits"`
	Offset     *int64  `json:"offset"`
	CDF        []int64 `json:"cdf"`
}

// LoadTables reads and validates an entropy.json file (format nwc-cdf-v1).
// Errors name the file and, for bad rows, the channel.
func LoadTables(path string) (*Tables, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseTables(filepath.Base(path), data)
}

// ParseTables validates an entropy.json document held in memory.
func ParseTables(data []byte) (*Tables, error) {
	return parseTables("entropy.json", data)
}

func parseTables(name string, data []byte) (*Tables, error) {
	var f fileJSON
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("%s: %w: %v", name, ErrBadCDF, err)
	}
	if f.Format != Format {
		return nil, fmt.Errorf("%s: %w: format %q, want %q", name, ErrBadCDF, f.Format, Format)
	}
	if f.Precision < MinPrecision || f.Precision > MaxPrecision {
		return nil, fmt.Errorf("%s: %w: precision %d outside [%d, %d]", name, ErrBadCDF, f.Precision, MinPrecision, MaxPrecision)
	}
	if len(f.Channels) == 0 || len(f.Channels) > MaxChannels {
		return nil, fmt.Errorf("%s: %w: %d channels, want 1..%d", name, ErrBadCDF, len(f.Channels), MaxChannels)
	}
	t := &Tables{Precision: uint(f.Precision), Channels: make([]Channel, len(f.Channels))}
	for c, cj := range f.Channels {
		ch, err := newChannel(t.Precision, cj)
		if err != nil {
			return nil, fmt.Errorf("%s: channel %d: %w", name, c, err)
		}
		t.Channels[c] = ch
	}
	return t, nil
}

func newChannel(prec uint, cj channelJSON) (Channel, error) {
	if cj.MedianBits == nil {
		return Channel{}, fmt.Errorf("%w: median_f32_bits missing", ErrBadCDF)
	}
	if cj.Offset == nil {
		return Channel{}, fmt.Errorf("%w: offset missing", ErrBadCDF)
	}
	med := math.Float32frombits(*cj.MedianBits)
	if math.IsNaN(float64(med)) || math.IsInf(float64(med), 0) {
		return Channel{}, fmt.Errorf("%w: median_f32_bits %#x is not finite", ErrBadCDF, *cj.MedianBits)
	}
	return buildChannel(prec, med, *cj.Offset, cj.CDF)
}

// NewTables builds and validates tables from in-memory rows, exactly as
// ParseTables would from JSON (exporters and tests use it).
func NewTables(precision uint, medians []float32, offsets []int64, cdfs [][]int64) (*Tables, error) {
	if precision < MinPrecision || precision > MaxPrecision {
		return nil, fmt.Errorf("%w: precision %d outside [%d, %d]", ErrBadCDF, precision, MinPrecision, MaxPrecision)
	}
	if len(cdfs) == 0 || len(cdfs) > MaxChannels || len(medians) != len(cdfs) || len(offsets) != len(cdfs) {
		return nil, fmt.Errorf("%w: %d cdfs, %d medians, %d offsets", ErrBadCDF, len(cdfs), len(medians), len(offsets))
	}
	t := &Tables{Precision: precision, Channels: make([]Channel, len(cdfs))}
	for c := range cdfs {
		m := medians[c]
		if math.IsNaN(float64(m)) || math.IsInf(float64(m), 0) {
			return nil, fmt.Errorf("channel %d: %w: median %v is not finite", c, ErrBadCDF, m)
		}
		ch, err := buildChannel(precision, m, offsets[c], cdfs[c])
		if err != nil {
			return nil, fmt.Errorf("channel %d: %w", c, err)
		}
		t.Channels[c] = ch
	}
	return t, nil
}

// buildChannel validates one row and precomputes its slot table.
func buildChannel(prec uint, median float32, offset int64, cdf []int64) (Channel, error) {
	total := int64(1) << prec
	if len(cdf) < 2 || len(cdf)-1 > MaxSymbols {
		return Channel{}, fmt.Errorf("%w: cdf has %d entries, want 2..%d", ErrBadCDF, len(cdf), MaxSymbols+1)
	}
	L := int64(len(cdf) - 2)
	if offset < -MaxOffset || offset > MaxOffset {
		return Channel{}, fmt.Errorf("%w: offset %d outside [%d, %d]", ErrBadCDF, offset, -MaxOffset, MaxOffset)
	}
	if offset+L-1 > MaxOffset {
		return Channel{}, fmt.Errorf("%w: last symbol %d beyond %d", ErrBadCDF, offset+L-1, MaxOffset)
	}
	if cdf[0] != 0 {
		return Channel{}, fmt.Errorf("%w: cdf[0] = %d, want 0", ErrBadCDF, cdf[0])
	}
	for i := 1; i < len(cdf); i++ {
		if cdf[i] <= cdf[i-1] {
			return Channel{}, fmt.Errorf("%w: cdf[%d] = %d not above cdf[%d] = %d (every symbol needs frequency >= 1)", ErrBadCDF, i, cdf[i], i-1, cdf[i-1])
		}
		if cdf[i] > total {
			return Channel{}, fmt.Errorf("%w: cdf[%d] = %d exceeds 1<<%d", ErrBadCDF, i, cdf[i], prec)
		}
	}
	if last := cdf[len(cdf)-1]; last != total {
		return Channel{}, fmt.Errorf("%w: cdf[%d] = %d, want 1<<%d = %d", ErrBadCDF, len(cdf)-1, last, prec, total)
	}
	ch := Channel{
		Median: median,
		Offset: int32(offset),
		CDF:    make([]uint32, len(cdf)),
		bucket: make([]uint16, 1<<bucketBits(prec)),
		n:      int32(L),
	}
	for i, v := range cdf {
		ch.CDF[i] = uint32(v)
	}
	shift := prec - bucketBits(prec)
	s := 0
	for j := range ch.bucket {
		start := uint32(j) << shift
		for ch.CDF[s+1] <= start {
			s++
		}
		ch.bucket[j] = uint16(s)
	}
	return ch, nil
}

// bucketBits is log2 of the number of decode buckets per channel.
func bucketBits(prec uint) uint { return min(prec, 10) }

// symbolOf returns the CDF index s with CDF[s] <= slot < CDF[s+1].
func (c *Channel) symbolOf(slot uint32, shift uint) uint32 {
	s := uint32(c.bucket[slot>>shift])
	for c.CDF[s+1] <= slot {
		s++
	}
	return s
}
