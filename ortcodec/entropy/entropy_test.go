package entropy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// quantizePMF turns a pmf (in-range symbols, then the tail mass for the
// escape) into a CDF at the given precision with every frequency >= 1.
func quantizePMF(pmf []float64, prec uint) []int64 {
	total := int64(1) << prec
	sum := 0.0
	for _, p := range pmf {
		sum += p
	}
	freq := make([]int64, len(pmf))
	got := int64(0)
	for i, p := range pmf {
		freq[i] = max(1, int64(math.Round(p/sum*float64(total))))
		got += freq[i]
	}
	// Fix the total by adjusting the largest frequencies.
	for got != total {
		best := 0
		for i := range freq {
			if freq[i] > freq[best] {
				best = i
			}
		}
		if got > total {
			d := min(got-total, freq[best]-1)
			freq[best] -= d
			got -= d
		} else {
			freq[best] += total - got
			got = total
		}
	}
	cdf := make([]int64, len(freq)+1)
	for i, f := range freq {
		cdf[i+1] = cdf[i] + f
	}
	return cdf
}

// synthTables builds C channels alternating discretized Laplace and
// Gaussian pmfs of different scales over [offset, offset+L-1] plus a tail.
func synthTables(t testing.TB, C int, prec uint, L int) *Tables {
	t.Helper()
	meds := make([]float32, C)
	offs := make([]int64, C)
	cdfs := make([][]int64, C)
	for c := 0; c < C; c++ {
		scale := 0.5 + float64(c)*0.4
		off := -L / 2
		pmf := make([]float64, L+1)
		mass := 0.0
		for i := 0; i < L; i++ {
			v := float64(off + i)
			var p float64
			if c%2 == 0 { // Laplace
				p = math.Exp(-math.Abs(v) / scale)
			} else { // Gaussian
				p = math.Exp(-v * v / (2 * scale * scale))
			}
			pmf[i] = p
			mass += p
		}
		pmf[L] = mass * 1e-4 // tail
		meds[c] = float32(c)*0.1 - 0.7
		offs[c] = int64(off)
		cdfs[c] = quantizePMF(pmf, prec)
	}
	tb, err := NewTables(prec, meds, offs, cdfs)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

// sample draws n interleaved symbols from the tables' own distributions;
// escape draws become values just outside the range, plus escFrac extra
// far-out escapes.
func sample(tb *Tables, n int, seed uint64, escFrac float64) []int32 {
	r := &splitmix{seed}
	syms := make([]int32, n)
	M := uint32(1) << tb.Precision
	for i := range syms {
		ch := &tb.Channels[i%len(tb.Channels)]
		if escFrac > 0 && r.Float64() < escFrac {
			syms[i] = int32(r.IntN(2*MaxMagnitude+1) - MaxMagnitude)
			continue
		}
		s := int32(ch.symbolOf(r.Uint32N(M), tb.Precision-bucketBits(tb.Precision)))
		if s == ch.n {
			if r.IntN(2) == 0 {
				syms[i] = ch.Offset - 1 - int32(r.IntN(40))
			} else {
				syms[i] = ch.Offset + ch.n + int32(r.IntN(40))
			}
		} else {
			syms[i] = ch.Offset + s
		}
	}
	return syms
}

// splitmix is a tiny generator whose output never changes with the Go
// version, so the golden bitstream test stays valid.
type splitmix struct{ s uint64 }

func (r *splitmix) Uint64() uint64 {
	r.s += 0x9e3779b97f4a7c15
	z := r.s
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}
func (r *splitmix) Uint32N(n uint32) uint32 { return uint32(r.Uint64()>>32) % n }
func (r *splitmix) IntN(n int) int          { return int(r.Uint64() % uint64(n)) }
func (r *splitmix) Float64() float64        { return float64(r.Uint64()>>11) / (1 << 53) }

func idealBits(tb *Tables, syms []int32) float64 {
	bits := 0.0
	M := float64(uint32(1) << tb.Precision)
	for i, v := range syms {
		ch := &tb.Channels[i%len(tb.Channels)]
		idx := int64(v) - int64(ch.Offset)
		if idx < 0 || idx >= int64(ch.n) {
			idx = int64(ch.n)
		}
		f := float64(ch.CDF[idx+1] - ch.CDF[idx])
		bits -= math.Log2(f / M)
	}
	return bits
}

func TestRoundTrip(t *testing.T) {
	for _, prec := range []uint{8, 12, 16} {
		for _, esc := range []float64{0, 0.01, 0.5} {
			t.Run(fmt.Sprintf("prec%d/esc%v", prec, esc), func(t *testing.T) {
				tb := synthTables(t, 16, prec, 41)
				syms := sample(tb, 16*5000+7, uint64(prec)*1000+uint64(esc*100), esc)
				// force boundary and extreme values
				syms[0], syms[1], syms[2], syms[3] = MaxMagnitude, -MaxMagnitude, tb.Channels[2].Offset-1, tb.Channels[3].Offset+tb.Channels[3].n
				buf, err := EncodeSymbols(tb, syms, nil)
				if err != nil {
					t.Fatal(err)
				}
				got, err := DecodeSymbols(tb, buf, len(syms), nil)
				if err != nil {
					t.Fatal(err)
				}
				for i := range syms {
					if got[i] != syms[i] {
						t.Fatalf("symbol %d: got %d want %d", i, got[i], syms[i])
					}
				}
				// streams
				for _, k := range []int{1, 7, 1000, 1 << 20} {
					sb, err := EncodeStreams(tb, syms, k, []byte("prefix"), 3)
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.HasPrefix(sb, []byte("prefix")) {
						t.Fatal("dst prefix lost")
					}
					got2, err := DecodeStreams(tb, sb[6:], len(syms), make([]int32, 3), 4)
					if err != nil {
						t.Fatalf("K=%d: %v", k, err)
					}
					for i := range syms {
						if got2[i] != syms[i] {
							t.Fatalf("K=%d symbol %d: got %d want %d", k, i, got2[i], syms[i])
						}
					}
				}
			})
		}
	}
}

func TestEmptyAndTiny(t *testing.T) {
	tb := synthTables(t, 16, 16, 9)
	for n := 0; n < 40; n++ {
		syms := sample(tb, n, uint64(n), 0.2)
		buf, err := EncodeSymbols(tb, syms, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeSymbols(tb, buf, n, nil)
		if err != nil || len(got) != n {
			t.Fatalf("n=%d: %v", n, err)
		}
		sb, err := EncodeStreams(tb, syms, 1, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeStreams(tb, sb, n, nil, 0); err != nil {
			t.Fatalf("streams n=%d: %v", n, err)
		}
		// wrong n must fail
		if _, err := DecodeSymbols(tb, buf, n+1, nil); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("n+1: got %v", err)
		}
	}
}

func TestCompressionEfficiency(t *testing.T) {
	for _, prec := range []uint{12, 16} {
		tb := synthTables(t, 16, prec, 63)
		syms := sample(tb, 16*10000, 42, 0)
		buf, err := EncodeSymbols(tb, syms, nil)
		if err != nil {
			t.Fatal(err)
		}
		ideal := idealBits(tb, syms) / 8
		ratio := float64(len(buf)) / ideal
		t.Logf("prec %d: %d symbols, %d bytes, ideal %.0f bytes, ratio %.5f", prec, len(syms), len(buf), ideal, ratio)
		if ratio > 1.01 {
			t.Errorf("size %d is %.3f%% above the ideal %.0f", len(buf), 100*(ratio-1), ideal)
		}
		sb, err := EncodeStreams(tb, syms, 4096, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("prec %d: streams of 4096 chunks: %d bytes (ratio %.5f)", prec, len(sb), float64(len(sb))/ideal)
	}
}

func TestDeterminism(t *testing.T) {
	tb := synthTables(t, 16, 16, 41)
	syms := sample(tb, 16*20000, 7, 0.01)
	a, err := EncodeSymbols(tb, syms, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := EncodeSymbols(tb, syms, nil)
	if !bytes.Equal(a, b) {
		t.Fatal("two encodes differ")
	}
	ref, _ := EncodeStreams(tb, syms, 1000, nil, 1)
	old := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(old)
	for _, p := range []int{1, 2, 4} {
		runtime.GOMAXPROCS(p)
		for _, w := range []int{0, 1, 3, 8} {
			s, err := EncodeStreams(tb, syms, 1000, nil, w)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(s, ref) {
				t.Fatalf("GOMAXPROCS=%d workers=%d: stream bytes differ", p, w)
			}
		}
	}
}

// TestGolden pins the bitstream: a change of the coder must be deliberate.
func TestGolden(t *testing.T) {
	tb := synthTables(t, 16, 16, 41)
	syms := sample(tb, 16*1000, 99, 0.01)
	buf, err := EncodeSymbols(tb, syms, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := uint64(14695981039346656037)
	for _, b := range buf {
		h = (h ^ uint64(b)) * 1099511628211
	}
	const want = uint64(0x298489e7f11dcc45)
	t.Logf("golden: %d bytes, fnv64a %#x", len(buf), h)
	if h != want {
		t.Fatalf("bitstream changed: fnv64a %#x, want %#x", h, want)
	}
}

func TestCorruption(t *testing.T) {
	tb := synthTables(t, 16, 16, 41)
	syms := sample(tb, 16*500, 3, 0)
	buf, _ := EncodeSymbols(tb, syms, nil)
	// every truncation fails
	for l := 0; l < len(buf); l++ {
		if _, err := DecodeSymbols(tb, buf[:l], len(syms), nil); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated to %d: got %v", l, err)
		}
	}
	// trailing bytes fail
	if _, err := DecodeSymbols(tb, append(append([]byte{}, buf...), 0, 0), len(syms), nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("trailing: got %v", err)
	}
	// Bit flips in modelled symbols are caught by the final-state check.
	// (Flips in bypass bits of escaped values are not: those bits are raw.
	// The container's checksum covers them.)
	r := rand.New(rand.NewPCG(1, 2))
	detected := 0
	const trials = 500
	for i := 0; i < trials; i++ {
		c := append([]byte{}, buf...)
		c[r.IntN(len(c))] ^= 1 << r.IntN(8)
		got, err := DecodeSymbols(tb, c, len(syms), nil)
		if err != nil {
			detected++
			continue
		}
		if slicesEqual(got, syms) {
			t.Fatal("flipped stream decoded to the original")
		}
	}
	t.Logf("bit flips detected by the final-state check: %d/%d", detected, trials)
	if detected < trials*99/100 {
		t.Errorf("only %d/%d flips detected", detected, trials)
	}
	if _, err := DecodeSymbols(tb, buf, -1, nil); !errors.Is(err, ErrCorrupt) {
		t.Fatal("negative n accepted")
	}
}

func slicesEqual(a, b []int32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestEncodeRange(t *testing.T) {
	tb := synthTables(t, 4, 12, 9)
	for _, v := range []int32{MaxMagnitude + 1, -MaxMagnitude - 1, math.MaxInt32, math.MinInt32} {
		if _, err := EncodeSymbols(tb, []int32{0, v}, nil); !errors.Is(err, ErrRange) {
			t.Errorf("%d: got %v", v, err)
		}
	}
	if _, err := EncodeStreams(tb, nil, 0, nil, 0); err == nil {
		t.Error("chunksPerStream 0 accepted")
	}
}

func TestQuantize(t *testing.T) {
	tb := synthTables(t, 16, 16, 41)
	y := make([]float32, 16*100)
	r := rand.New(rand.NewPCG(5, 6))
	for i := range y {
		y[i] = float32(r.NormFloat64() * 3)
	}
	// exact halves around the median: round half to even
	tb.Channels[0].Median = 0.25 // exact halves below
	m := tb.Channels[0].Median
	y[0] = m + 0.5
	y[16] = m + 1.5
	y[32] = m - 0.5
	s, err := Quantize(tb, y, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s[0] != 0 || s[16] != 2 || s[32] != 0 {
		t.Errorf("half-even: got %d %d %d", s[0], s[16], s[32])
	}
	yh := Dequantize(tb, s, nil)
	for i := range y {
		c := i % 16
		med := tb.Channels[c].Median
		want := float32(math.RoundToEven(float64(y[i]-med))) + med
		if yh[i] != want {
			t.Fatalf("%d: got %v want %v", i, yh[i], want)
		}
		if d := math.Abs(float64(yh[i] - y[i])); d > 0.5001 {
			t.Fatalf("%d: error %v", i, d)
		}
	}
	for _, bad := range []float32{float32(math.NaN()), float32(math.Inf(1)), 3e9, -3e9} {
		if _, err := Quantize(tb, []float32{bad}, nil); !errors.Is(err, ErrRange) {
			t.Errorf("%v: got %v", bad, err)
		}
	}
}

func writeJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "entropy.json")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadTables(t *testing.T) {
	good := func() map[string]any {
		return map[string]any{
			"format":    "nwc-cdf-v1",
			"precision": 8,
			"channels": []any{
				map[string]any{"median_f32_bits": math.Float32bits(0.25), "offset": -1, "cdf": []int{0, 10, 200, 250, 256}},
				map[string]any{"median_f32_bits": math.Float32bits(-1.5), "offset": 0, "cdf": []int{0, 255, 256}},
			},
		}
	}
	tb, err := LoadTables(writeJSON(t, good()))
	if err != nil {
		t.Fatal(err)
	}
	if tb.Precision != 8 || len(tb.Channels) != 2 || tb.Channels[0].Median != 0.25 || tb.Channels[1].Median != -1.5 || tb.Channels[0].NumSymbols() != 3 {
		t.Fatalf("bad tables %+v", tb)
	}
	if c0, sh := &tb.Channels[0], tb.Precision-bucketBits(8); c0.symbolOf(0, sh) != 0 || c0.symbolOf(9, sh) != 0 || c0.symbolOf(10, sh) != 1 || c0.symbolOf(255, sh) != 3 {
		t.Fatal("bad slot table")
	}
	cases := []struct {
		name, want string
		mod        func(m map[string]any)
	}{
		{"format", "format", func(m map[string]any) { m["format"] = "nwc-cdf-v2" }},
		{"prec-low", "precision", func(m map[string]any) { m["precision"] = 7 }},
		{"prec-high", "precision", func(m map[string]any) { m["precision"] = 17 }},
		{"no-channels", "channels", func(m map[string]any) { m["channels"] = []any{} }},
		{"start", "channel 0: entropy: bad CDF table: cdf[0]", func(m map[string]any) { ch(m, 0)["cdf"] = []int{1, 10, 200, 250, 256} }},
		{"flat", "channel 1: entropy: bad CDF table: cdf[2]", func(m map[string]any) { ch(m, 1)["cdf"] = []int{0, 256, 256} }},
		{"decrease", "channel 0", func(m map[string]any) { ch(m, 0)["cdf"] = []int{0, 100, 50, 250, 256} }},
		{"end", "channel 0", func(m map[string]any) { ch(m, 0)["cdf"] = []int{0, 10, 200, 250, 255} }},
		{"over", "channel 0", func(m map[string]any) { ch(m, 0)["cdf"] = []int{0, 10, 300, 250, 256} }},
		{"short", "channel 0", func(m map[string]any) { ch(m, 0)["cdf"] = []int{0} }},
		{"offset", "offset", func(m map[string]any) { ch(m, 0)["offset"] = MaxOffset + 1 }},
		{"no-offset", "offset missing", func(m map[string]any) { delete(ch(m, 0), "offset") }},
		{"no-median", "median", func(m map[string]any) { delete(ch(m, 1), "median_f32_bits") }},
		{"nan-median", "not finite", func(m map[string]any) { ch(m, 1)["median_f32_bits"] = 0x7fc00000 }},
		{"median-bits-overflow", "bad CDF", func(m map[string]any) { ch(m, 1)["median_f32_bits"] = int64(1) << 33 }},
		{"negative", "channel 0", func(m map[string]any) { ch(m, 0)["cdf"] = []int{0, -5, 200, 250, 256} }},
	}
	for _, tc := range cases {
		m := good()
		tc.mod(m)
		p := writeJSON(t, m)
		_, err := LoadTables(p)
		if !errors.Is(err, ErrBadCDF) {
			t.Errorf("%s: got %v, want ErrBadCDF", tc.name, err)
			continue
		}
		if !strings.Contains(err.Error(), "entropy.json") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %q lacks %q or the file name", tc.name, err, tc.want)
		}
	}
	// too many symbols for the precision
	cdf := make([]int, 300)
	for i := range cdf {
		cdf[i] = i
	}
	m := good()
	ch(m, 0)["cdf"] = cdf
	if _, err := LoadTables(writeJSON(t, m)); !errors.Is(err, ErrBadCDF) {
		t.Errorf("oversized row: %v", err)
	}
	if _, err := ParseTables([]byte("{")); !errors.Is(err, ErrBadCDF) {
		t.Errorf("bad json: %v", err)
	}
}

func ch(m map[string]any, i int) map[string]any {
	return m["channels"].([]any)[i].(map[string]any)
}
