//go:build cgo

package ortcodec

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/nwc-project/nwc/internal/ortenv"
	"github.com/nwc-project/nwc/internal/ortenv/orttest"
)

// Parity of the Go side (ONNX Runtime through ortcodec, Quantize, the Go
// entropy coder) against the PyTorch reference values stored in each shipped
// codec's parity.bin (layout: models/README.md, section "parity.bin").

// parityFile is the name of the reference file inside a codec folder.
const parityFile = "parity.bin"

// Tolerances of the parity test (issue 4, item 5).
const (
	// parityRelTol bounds max|go - pytorch| / max|pytorch| over all values of
	// one network output (encoder y, decoder x_hat) of one codec.
	parityRelTol = 1e-5
	// parityBoundary: a Go symbol may differ from PyTorch's only where
	// y - median lies within this distance of a rounding boundary (k + 0.5).
	parityBoundary = 1e-4
	// parityRateTol bounds |payload bits - estimate| / estimate.
	parityRateTol = 0.01
)

var parityMagic = [8]byte{'N', 'W', 'C', 'P', 'A', 'R', 0x00, 0x01}

const (
	parityVersion    = 1
	parityHeaderSize = 48
)

// parityData is one decoded parity.bin.
type parityData struct {
	N, D         int
	EstContBits  float64 // PyTorch entropy model, -sum log2 p (continuous density)
	EstTableBits float64 // -sum log2(freq/2^prec) under entropy.json, escape symbol only
	Escapes      int
	Q            []int64
	X, Y         []float32 // encoder input, PyTorch encoder output
	S            []int32   // round_half_even(y - median)
	YHat, XHat   []float32 // float32(s) + median, PyTorch decoder output
}

// parseParity decodes and validates a parity.bin image; name is used in
// errors. It is strict: magic, version, d, reserved fields, the exact file
// length implied by n and d, levels in 0..3, finite floats.
func parseParity(name string, b []byte) (*parityData, error) {
	fail := func(format string, args ...any) (*parityData, error) {
		return nil, fmt.Errorf("%s: %s", name, fmt.Sprintf(format, args...))
	}
	if len(b) < parityHeaderSize {
		return fail("%d bytes, shorter than the %d-byte header", len(b), parityHeaderSize)
	}
	if !bytes.Equal(b[:8], parityMagic[:]) {
		return fail("magic %q, want %q", b[:8], parityMagic[:])
	}
	le := binary.LittleEndian
	if v := le.Uint32(b[8:]); v != parityVersion {
		return fail("version %d, want %d", v, parityVersion)
	}
	n, d := uint64(le.Uint32(b[12:])), uint64(le.Uint32(b[16:]))
	if r := le.Uint32(b[20:]); r != 0 {
		return fail("reserved field at offset 20 is %d, want 0", r)
	}
	if r := le.Uint32(b[44:]); r != 0 {
		return fail("reserved field at offset 44 is %d, want 0", r)
	}
	if d != D {
		return fail("d = %d, want %d", d, D)
	}
	if n == 0 {
		return fail("n = 0 chunks")
	}
	// 48-byte header, i32 q[n], then five arrays of n*d 4-byte values.
	want := uint64(parityHeaderSize) + 4*n + 5*4*n*d // no overflow: n < 2^32, d = 16
	if uint64(len(b)) != want {
		return fail("%d bytes, want %d for n = %d, d = %d (48 header + 4n levels + 5 arrays of 4*n*d bytes)",
			len(b), want, n, d)
	}
	p := &parityData{N: int(n), D: int(d)}
	p.EstContBits = math.Float64frombits(le.Uint64(b[24:]))
	p.EstTableBits = math.Float64frombits(le.Uint64(b[32:]))
	for _, e := range []struct {
		what string
		v    float64
	}{{"est_cont_bits", p.EstContBits}, {"est_table_bits", p.EstTableBits}} {
		if math.IsNaN(e.v) || math.IsInf(e.v, 0) || e.v <= 0 {
			return fail("%s = %v, want a finite positive number", e.what, e.v)
		}
	}
	esc := uint64(le.Uint32(b[40:]))
	if esc > n*d {
		return fail("escapes = %d, more than the n*d = %d symbols", esc, n*d)
	}
	p.Escapes = int(esc)

	off := parityHeaderSize
	nd := int(n * d)
	p.Q = make([]int64, n)
	for i := range p.Q {
		v := int32(le.Uint32(b[off+4*i:]))
		if v < 0 || v >= NumLevels {
			return fail("q[%d] = %d, outside 0..%d", i, v, NumLevels-1)
		}
		p.Q[i] = int64(v)
	}
	off += 4 * int(n)
	floats := func(what string) ([]float32, error) {
		out := make([]float32, nd)
		for i := range out {
			v := math.Float32frombits(le.Uint32(b[off+4*i:]))
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return nil, fmt.Errorf("%s: %s[%d] (chunk %d, channel %d) is %v", name, what, i, i/D, i%D, v)
			}
			out[i] = v
		}
		off += 4 * nd
		return out, nil
	}
	var err error
	if p.X, err = floats("x"); err != nil {
		return nil, err
	}
	if p.Y, err = floats("y"); err != nil {
		return nil, err
	}
	p.S = make([]int32, nd)
	for i := range p.S {
		p.S[i] = int32(le.Uint32(b[off+4*i:]))
	}
	off += 4 * nd
	if p.YHat, err = floats("y_hat"); err != nil {
		return nil, err
	}
	if p.XHat, err = floats("x_hat"); err != nil {
		return nil, err
	}
	if off != len(b) {
		return fail("internal: parsed %d of %d bytes", off, len(b)) // unreachable after the length check
	}
	return p, nil
}

func readParity(dir string) (*parityData, error) {
	path := filepath.Join(dir, parityFile)
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseParity(path, b)
}

// buildParity writes a parity.bin image (for the parser tests).
func buildParity(p *parityData) []byte {
	le := binary.LittleEndian
	b := append([]byte(nil), parityMagic[:]...)
	b = le.AppendUint32(b, parityVersion)
	b = le.AppendUint32(b, uint32(p.N))
	b = le.AppendUint32(b, uint32(p.D))
	b = le.AppendUint32(b, 0)
	b = le.AppendUint64(b, math.Float64bits(p.EstContBits))
	b = le.AppendUint64(b, math.Float64bits(p.EstTableBits))
	b = le.AppendUint32(b, uint32(p.Escapes))
	b = le.AppendUint32(b, 0)
	for _, v := range p.Q {
		b = le.AppendUint32(b, uint32(int32(v)))
	}
	f := func(v []float32) {
		for _, x := range v {
			b = le.AppendUint32(b, math.Float32bits(x))
		}
	}
	f(p.X)
	f(p.Y)
	for _, v := range p.S {
		b = le.AppendUint32(b, uint32(v))
	}
	f(p.YHat)
	f(p.XHat)
	return b
}

func TestParityFileFormat(t *testing.T) {
	const n = 3
	p := &parityData{N: n, D: D, EstContBits: 100.5, EstTableBits: 101.25, Escapes: 2, Q: []int64{0, 3, 1}}
	p.X, p.Y, p.YHat, p.XHat = make([]float32, n*D), make([]float32, n*D), make([]float32, n*D), make([]float32, n*D)
	p.S = make([]int32, n*D)
	for i := range p.X {
		p.X[i], p.Y[i], p.S[i], p.YHat[i], p.XHat[i] = float32(i), float32(i)+0.25, int32(-i), float32(-i)+0.5, float32(i)*2
	}
	good := buildParity(p)
	if want := parityHeaderSize + 4*n + 5*4*n*D; len(good) != want {
		t.Fatalf("buildParity: %d bytes, want %d", len(good), want)
	}
	got, err := parseParity("good", good)
	if err != nil {
		t.Fatal(err)
	}
	if got.N != n || got.D != D || got.EstContBits != 100.5 || got.EstTableBits != 101.25 || got.Escapes != 2 ||
		got.Q[1] != 3 || got.X[5] != 5 || got.Y[5] != 5.25 || got.S[7] != -7 || got.YHat[7] != -6.5 || got.XHat[9] != 18 {
		t.Fatalf("round trip: got %+v", got)
	}

	le := binary.LittleEndian
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	nan32 := math.Float32bits(float32(math.NaN()))
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "shorter than the 48-byte header"},
		{"header only", good[:40], "shorter than the 48-byte header"},
		{"magic", mut(func(b []byte) []byte { b[0] = 'X'; return b }), "magic"},
		{"magic version byte", mut(func(b []byte) []byte { b[7] = 2; return b }), "magic"},
		{"version", mut(func(b []byte) []byte { le.PutUint32(b[8:], 2); return b }), "version 2, want 1"},
		{"d", mut(func(b []byte) []byte { le.PutUint32(b[16:], 8); return b }), "d = 8, want 16"},
		{"n zero", mut(func(b []byte) []byte { le.PutUint32(b[12:], 0); return b }), "n = 0"},
		{"n too big", mut(func(b []byte) []byte { le.PutUint32(b[12:], 4); return b }), "bytes, want"},
		{"n huge", mut(func(b []byte) []byte { le.PutUint32(b[12:], math.MaxUint32); return b }), "bytes, want"},
		{"reserved 20", mut(func(b []byte) []byte { le.PutUint32(b[20:], 1); return b }), "offset 20"},
		{"reserved 44", mut(func(b []byte) []byte { le.PutUint32(b[44:], 1); return b }), "offset 44"},
		{"truncated", good[:len(good)-1], "bytes, want"},
		{"trailing", append(append([]byte(nil), good...), 0), "bytes, want"},
		{"est_cont NaN", mut(func(b []byte) []byte { le.PutUint64(b[24:], math.Float64bits(math.NaN())); return b }), "est_cont_bits"},
		{"est_table negative", mut(func(b []byte) []byte { le.PutUint64(b[32:], math.Float64bits(-1)); return b }), "est_table_bits"},
		{"escapes", mut(func(b []byte) []byte { le.PutUint32(b[40:], n*D+1); return b }), "escapes"},
		{"level", mut(func(b []byte) []byte { le.PutUint32(b[parityHeaderSize+4:], 4); return b }), "q[1] = 4"},
		{"negative level", mut(func(b []byte) []byte { le.PutUint32(b[parityHeaderSize:], math.MaxUint32); return b }), "q[0] = -1"},
		{"y NaN", mut(func(b []byte) []byte {
			le.PutUint32(b[parityHeaderSize+4*n+4*n*D+4*17:], nan32)
			return b
		}), "y[17] (chunk 1, channel 1) is NaN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseParity("parity.bin", tc.b)
			if err == nil {
				t.Fatalf("no error, want one containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "parity.bin: ") {
				t.Fatalf("error %q, want it to name the file and contain %q", err, tc.want)
			}
		})
	}
}

// shippedCodecs lists the codec folders under ../models (any folder with an
// encoder.onnx).
func shippedCodecs(t *testing.T) []string {
	t.Helper()
	root := filepath.Join("..", "models")
	ents, err := os.ReadDir(root)
	if err != nil {
		t.Fatalf("shipped codecs: %v", err)
	}
	var dirs []string
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(root, e.Name())
		if _, err := os.Stat(filepath.Join(dir, EncoderFile)); err == nil {
			dirs = append(dirs, dir)
		}
	}
	sort.Strings(dirs)
	if len(dirs) == 0 {
		t.Fatalf("no codec folder (with %s) under %s", EncoderFile, root)
	}
	return dirs
}

// diffStats compares a Go network output with the PyTorch reference.
type diffStats struct {
	maxAbs    float64 // max_i |got_i - ref_i|
	maxRef    float64 // max_i |ref_i|
	rel       float64 // maxAbs / maxRef: the checked quantity
	elemRel   float64 // max_i |got_i - ref_i| / max(1, |ref_i|)
	worst     int     // index of maxAbs
	identical int     // bitwise equal values
}

func compareOutputs(got, ref []float32) diffStats {
	var s diffStats
	for i := range ref {
		r := float64(ref[i])
		d := math.Abs(float64(got[i]) - r)
		if d > s.maxAbs {
			s.maxAbs, s.worst = d, i
		}
		s.maxRef = math.Max(s.maxRef, math.Abs(r))
		s.elemRel = math.Max(s.elemRel, d/math.Max(1, math.Abs(r)))
		if math.Float32bits(got[i]) == math.Float32bits(ref[i]) {
			s.identical++
		}
	}
	s.rel = s.maxAbs / s.maxRef
	return s
}

func (s diffStats) String() string {
	return fmt.Sprintf("rel=max|d|/max|ref|=%.3g (max|d|=%.3g, max|ref|=%.4g, max_i |d_i|/max(1,|ref_i|)=%.3g, bit-identical %d)",
		s.rel, s.maxAbs, s.maxRef, s.elemRel, s.identical)
}

// boundaryDist is the distance of v - median (float32 arithmetic, as in
// Quantize) to the nearest rounding boundary k + 0.5.
func boundaryDist(v, median float32) float64 {
	d := float64(v - median)
	return math.Abs(d - (math.Floor(d) + 0.5))
}

// tableBits returns -sum log2(freq / 2^precision) of syms under the level
// tables (escape symbol only for out-of-range values, like est_table_bits),
// the number of escapes, and the bypass bits the Go coder adds for them
// (entropy package doc: 6 length bits + bitlen(e) - 1 mantissa bits).
func tableBits(c *Codec, syms []int32, q []int64) (bits float64, escapes, bypass int) {
	for i, l := range q {
		tab := c.LevelTables(int(l))
		total := math.Ldexp(1, int(tab.Precision))
		for ch := 0; ch < D; ch++ {
			chn := &tab.Channels[ch]
			v := int64(syms[i*D+ch])
			L := int64(chn.NumSymbols())
			idx := v - int64(chn.Offset)
			if idx < 0 || idx >= L {
				var e uint64
				if idx < 0 {
					e = uint64(-idx-1) * 2 // offset-1-v
				} else {
					e = uint64(idx-L)*2 + 1 // v-offset-L
				}
				k := 0
				for x := e; x > 0; x >>= 1 {
					k++
				}
				escapes++
				bypass += 6 + max(k-1, 0)
				idx = L
			}
			f := float64(chn.CDF[idx+1] - chn.CDF[idx])
			bits -= math.Log2(f / total)
		}
	}
	return bits, escapes, bypass
}

// framingBytes counts the container bytes of an EncodeLevels payload that
// carry no symbols: per level the uvarint length, and inside
// entropy.EncodeStreams the uvarints K, m and the m stream lengths. (The
// 4-byte final rANS state of each stream is counted as payload.)
func framingBytes(payload []byte) (framing, streams int, err error) {
	next := func(p *[]byte) (uint64, error) {
		v, k := binary.Uvarint(*p)
		if k <= 0 {
			return 0, errors.New("bad uvarint")
		}
		*p = (*p)[k:]
		framing += k
		return v, nil
	}
	p := payload
	for l := 0; l < NumLevels; l++ {
		n, err := next(&p)
		if err != nil || n > uint64(len(p)) {
			return 0, 0, fmt.Errorf("level %d: bad length", l)
		}
		lv := p[:n]
		p = p[n:]
		if _, err := next(&lv); err != nil { // K
			return 0, 0, fmt.Errorf("level %d: K: %w", l, err)
		}
		m, err := next(&lv)
		if err != nil {
			return 0, 0, fmt.Errorf("level %d: m: %w", l, err)
		}
		for j := uint64(0); j < m; j++ {
			if _, err := next(&lv); err != nil {
				return 0, 0, fmt.Errorf("level %d: stream %d length: %w", l, j, err)
			}
		}
		streams += int(m)
	}
	return framing, streams, nil
}

// TestParityShippedCodecs checks every shipped codec against the PyTorch
// reference values of its parity.bin:
//
//  1. Encode(x) vs PyTorch y and Decode(y_hat) vs PyTorch x_hat, each within
//     parityRelTol of max|ref| over the whole output.
//  2. Quantize(y_go) equals PyTorch's symbols s except within parityBoundary
//     of a rounding boundary (and then by at most 1); Quantize(y_pytorch)
//     equals s and Dequantize(s) equals y_hat bit for bit.
//  3. EncodeLevels(s) / DecodeLevels round-trips s exactly, and the payload
//     (all bytes of EncodeLevels, framing included) is within parityRateTol
//     of est_table_bits + the escapes' bypass bits, and of est_cont_bits.
//     est_table_bits is also recomputed here from entropy.json.
func TestParityShippedCodecs(t *testing.T) {
	orttest.Require(t)
	t.Logf("ONNX Runtime %s, 1 intra-op thread, 1 session; tolerances: networks %g (max|d|/max|ref|), rounding boundary %g, payload size %g%%",
		ortenv.Version(), parityRelTol, parityBoundary, 100*parityRateTol)
	for _, dir := range shippedCodecs(t) {
		name := filepath.Base(dir)
		t.Run(name, func(t *testing.T) {
			p, err := readParity(dir)
			if err != nil {
				t.Fatalf("parity reference: %v", err)
			}
			c, err := loadDir(dir, WithThreads(1), WithSessions(1))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := c.Close(); err != nil {
					t.Error(err)
				}
			})
			ctx := t.Context()
			nd := p.N * D

			// 1. Networks.
			yGo, err := c.Encode(ctx, p.X, p.Q)
			if err != nil {
				t.Fatal(err)
			}
			enc := compareOutputs(yGo, p.Y)
			if enc.rel > parityRelTol {
				t.Errorf("encoder: %v > %g; worst y[%d] (chunk %d, q %d): go %v, pytorch %v",
					enc, parityRelTol, enc.worst, enc.worst/D, p.Q[enc.worst/D], yGo[enc.worst], p.Y[enc.worst])
			}
			xGo, err := c.Decode(ctx, p.YHat, p.Q)
			if err != nil {
				t.Fatal(err)
			}
			dec := compareOutputs(xGo, p.XHat)
			if dec.rel > parityRelTol {
				t.Errorf("decoder: %v > %g; worst x_hat[%d] (chunk %d, q %d): go %v, pytorch %v",
					dec, parityRelTol, dec.worst, dec.worst/D, p.Q[dec.worst/D], xGo[dec.worst], p.XHat[dec.worst])
			}

			// 2. Integer symbols.
			sRef, err := c.Quantize(p.Y, p.Q, nil)
			if err != nil {
				t.Fatal(err)
			}
			refMismatch := 0
			for i := range sRef {
				if sRef[i] != p.S[i] {
					if refMismatch < 5 {
						t.Errorf("Quantize(pytorch y)[%d] (chunk %d, q %d) = %d, stored s = %d (y = %v)",
							i, i/D, p.Q[i/D], sRef[i], p.S[i], p.Y[i])
					}
					refMismatch++
				}
			}
			yhGo, err := c.Dequantize(p.S, p.Q, nil)
			if err != nil {
				t.Fatal(err)
			}
			dqMismatch := 0
			for i := range yhGo {
				if math.Float32bits(yhGo[i]) != math.Float32bits(p.YHat[i]) {
					if dqMismatch < 5 {
						t.Errorf("Dequantize(s)[%d] = %v, stored y_hat = %v", i, yhGo[i], p.YHat[i])
					}
					dqMismatch++
				}
			}
			sGo, err := c.Quantize(yGo, p.Q, nil)
			if err != nil {
				t.Fatal(err)
			}
			near, nearMismatch, farMismatch := 0, 0, 0
			for i := range sGo {
				med := c.LevelTables(int(p.Q[i/D])).Channels[i%D].Median
				isNear := math.Min(boundaryDist(yGo[i], med), boundaryDist(p.Y[i], med)) < parityBoundary
				if isNear {
					near++
				}
				if sGo[i] == p.S[i] {
					continue
				}
				diff := int64(sGo[i]) - int64(p.S[i])
				if isNear && (diff == 1 || diff == -1) {
					nearMismatch++
					continue
				}
				if farMismatch < 5 {
					t.Errorf("symbol %d (chunk %d, channel %d, q %d): go %d, pytorch %d; y go %v, pytorch %v, median %v (boundary distance go %.3g, pytorch %.3g)",
						i, i/D, i%D, p.Q[i/D], sGo[i], p.S[i], yGo[i], p.Y[i], med,
						boundaryDist(yGo[i], med), boundaryDist(p.Y[i], med))
				}
				farMismatch++
			}

			// 3. Entropy coder on PyTorch's symbols.
			payload, err := c.EncodeLevels(p.S, p.Q, nil)
			if err != nil {
				t.Fatal(err)
			}
			back, err := c.DecodeLevels(payload, p.Q)
			if err != nil {
				t.Fatalf("DecodeLevels: %v", err)
			}
			rtMismatch := 0
			for i := range back {
				if back[i] != p.S[i] {
					if rtMismatch < 5 {
						t.Errorf("round trip: symbol %d (chunk %d, q %d) decoded %d, want %d", i, i/D, p.Q[i/D], back[i], p.S[i])
					}
					rtMismatch++
				}
			}
			framing, streams, err := framingBytes(payload)
			if err != nil {
				t.Errorf("payload framing: %v", err)
			}
			tb, esc, bypass := tableBits(c, p.S, p.Q)
			if esc != p.Escapes {
				t.Errorf("escapes under entropy.json: %d, parity.bin header says %d", esc, p.Escapes)
			}
			if d := math.Abs(tb-p.EstTableBits) / p.EstTableBits; d > 1e-9 {
				t.Errorf("est_table_bits recomputed from entropy.json = %.6f, stored %.6f (rel %.3g)", tb, p.EstTableBits, d)
			}
			bits := float64(8 * len(payload))
			tableRef := p.EstTableBits + float64(bypass)
			relTable := (bits - tableRef) / tableRef
			relCont := (bits - p.EstContBits) / p.EstContBits
			if math.Abs(relTable) > parityRateTol {
				t.Errorf("payload %.0f bits vs est_table_bits + bypass = %.1f + %d = %.1f: %+.3f%%, outside ±%g%%",
					bits, p.EstTableBits, bypass, tableRef, 100*relTable, 100*parityRateTol)
			}
			if math.Abs(relCont) > parityRateTol {
				t.Errorf("payload %.0f bits vs est_cont_bits %.1f: %+.3f%%, outside ±%g%%",
					bits, p.EstContBits, 100*relCont, 100*parityRateTol)
			}

			t.Logf("PARITY %s: n=%d chunks (%d latents) | "+
				"encoder y: %v | decoder x_hat: %v | "+
				"symbols: Quantize(y_go) vs pytorch s: %d near-boundary (<%g) values, %d of them differ by 1, %d differ elsewhere; "+
				"Quantize(y_pytorch) != s: %d; Dequantize(s) != y_hat: %d | "+
				"entropy: round trip %d/%d exact, payload %d B = %.0f bits (%.4f bits/latent; framing %d B, %d streams), "+
				"escapes %d (bypass %d bits); est_table %.1f (recomputed %.1f) + bypass = %.1f -> payload %+.3f%%; "+
				"est_cont %.1f -> payload %+.3f%%; est_table vs est_cont %+.3f%%",
				name, p.N, nd,
				enc, dec,
				near, parityBoundary, nearMismatch, farMismatch,
				refMismatch, dqMismatch,
				nd-rtMismatch, nd, len(payload), bits, bits/float64(nd), framing, streams,
				esc, bypass, p.EstTableBits, tb, tableRef, 100*relTable,
				p.EstContBits, 100*relCont, 100*(p.EstTableBits-p.EstContBits)/p.EstContBits)
		})
	}
}
