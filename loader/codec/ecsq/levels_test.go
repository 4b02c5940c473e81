package ecsq

import (
	"bytes"
	"context"
	"errors"
	"math"
	"slices"
	"testing"

	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/ortcodec/ldlq"
)

// levelsFor ranks the columns of a test H like the encoder does.
func levelsFor(t *testing.T, H []float64, n int) []uint8 {
	t.Helper()
	lv := codec.Levels(H, n)
	var cnt [codec.NumLevels]int
	for _, l := range lv {
		cnt[l]++
	}
	t.Logf("n=%d levels %v", n, cnt)
	return lv
}

// TestLevelsRoundTrip: a version-2 payload decodes to the encoder's values
// bit for bit, for any number of workers and through the registered
// decoder, and each level's columns are quantized with their own step.
func TestLevelsRoundTrip(t *testing.T) {
	ctx := context.Background()
	for _, shape := range [][2]int{{1, 1}, {3, 7}, {17, 301}, {64, 256}} {
		m, n := shape[0], shape[1]
		W := randW(m, n, uint64(7*m+n))
		var H []float64
		if n > 1 {
			H = correlatedH(n, n/4+1, 2*n, 3)
		}
		f, err := ldlq.NewFactor(H, n, ldlq.Options{})
		if err != nil {
			t.Fatal(err)
		}
		lv := codec.Levels(H, n)
		if H != nil {
			lv[0] = 3 // every level present even in small matrices
			lv[n-1] = 2
		}
		res, err := EncodeFactor(ctx, W, m, n, f, 0.3, Options{StreamSymbols: 100, Levels: lv})
		if err != nil {
			t.Fatal(err)
		}
		if res.Payload[0] != VersionLevels {
			t.Fatalf("payload version %d, want %d", res.Payload[0], VersionLevels)
		}
		for _, workers := range []int{1, 3} {
			got, err := DecodeWorkers(res.Payload, m, n, nil, workers)
			if err != nil {
				t.Fatalf("%dx%d: %v", m, n, err)
			}
			for i := range got {
				if math.Float32bits(got[i]) != math.Float32bits(res.What[i]) {
					t.Fatalf("%dx%d: value %d decodes to %v, encoder had %v", m, n, i, got[i], res.What[i])
				}
			}
		}
		raw, err := decoder{}.Decode(ctx, codec.Section{DType: tensor.F32, Shape: []int64{int64(m), int64(n)},
			RawSize: int64(4 * m * n), Params: []byte{VersionLevels}}, res.Payload, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(raw, tensor.F32Bytes(res.What, nil)) {
			t.Fatal("registered decoder differs from the encoder's reconstruction")
		}
		// Every value of a level-q column is an integer multiple of that
		// level's step times its row scale.
		h, err := decodeCodes(nil, res.Payload, m, n, 1)
		if err != nil {
			t.Fatal(err)
		}
		for q := 1; q < codec.NumLevels; q++ {
			want := float32(max(float64(float32(0.3))*codec.LevelStepRatio(q), MinStep))
			if h.steps[q] != want {
				t.Errorf("level %d step %v, want %v", q, h.steps[q], want)
			}
		}
		for r := 0; r < m; r++ {
			for c := 0; c < n; c++ {
				if got := float32(h.codes[r*n+c]) * (h.steps[lv[c]] * h.scales[r]); got != res.What[r*n+c] {
					t.Fatalf("value (%d,%d) is not its level's multiple", r, c)
				}
			}
		}
	}
}

// TestLevelsPay: on LLM-like weights with a skewed H, spending bits on the
// top columns lowers the H-weighted error at equal rate (the reason nwc has
// levels), and the version-1 format still decodes.
func TestLevelsPay(t *testing.T) {
	ctx := context.Background()
	m, n := 256, 512
	W := randW(m, n, 21)
	H := correlatedH(n, 40, 2*n, 5)
	// A few dominant input channels, as real activations have.
	for _, j := range []int{3, 77, 200, 411, 500} {
		for k := 0; k < n; k++ {
			H[j*n+k] *= 30
			H[k*n+j] *= 30
		}
	}
	f, err := ldlq.NewFactor(H, n, ldlq.Options{})
	if err != nil {
		t.Fatal(err)
	}
	proxy := func(What []float32) float64 {
		l, err := ldlq.ProxyLoss(W, What, m, n, H)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	one, err := StepForBits(ctx, W, m, n, f, 3, Options{}, SearchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	lv, err := StepForBits(ctx, W, m, n, f, 3, Options{Levels: levelsFor(t, H, n)}, SearchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if one.Payload[0] != Version {
		t.Fatalf("one-step payload version %d", one.Payload[0])
	}
	p1, p2 := proxy(one.What), proxy(lv.What)
	t.Logf("one step: %.4f bits/weight proxy %.4g; levels: %.4f bits/weight proxy %.4g", one.Bits, p1, lv.Bits, p2)
	if math.Abs(one.Bits-3) > 0.01 || math.Abs(lv.Bits-3) > 0.01 {
		t.Fatalf("rates %g, %g not at 3", one.Bits, lv.Bits)
	}
	if !(p2 < p1) {
		t.Errorf("levels did not lower the H-weighted error: %g vs %g", p2, p1)
	}
	if _, err := Decode(one.Payload, m, n, nil); err != nil {
		t.Fatal(err)
	}
}

// TestLevelsCorrupt: truncations and bad fields of a version-2 payload are
// ErrCorrupt, never a panic.
func TestLevelsCorrupt(t *testing.T) {
	m, n := 5, 33
	H := correlatedH(n, 9, 2*n, 3)
	lv := codec.Levels(H, n)
	lv[0], lv[1] = 3, 2
	res, err := EncodeFactor(context.Background(), randW(m, n, 5), m, n, nil, 0.2, Options{Levels: lv, StreamSymbols: 7})
	if err != nil {
		t.Fatal(err)
	}
	p := res.Payload
	for k := 0; k < len(p); k++ {
		if _, err := Decode(p[:k], m, n, nil); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated to %d bytes: %v", k, err)
		}
	}
	if _, err := Decode(append(bytes.Clone(p), 0), m, n, nil); !errors.Is(err, ErrCorrupt) {
		t.Errorf("trailing byte: %v", err)
	}
	bad := bytes.Clone(p)
	bad[5+2*m+(n+3)/4-1] |= 0xc0 // padding bits of the level map (n%4 = 1)
	if _, err := Decode(bad, m, n, nil); !errors.Is(err, ErrCorrupt) {
		t.Errorf("padding bits: %v", err)
	}
	bad = bytes.Clone(p)
	copy(bad[5+2*m+(n+3)/4:], []byte{0, 0, 0xc0, 0x7f}) // level 1 step NaN
	if _, err := Decode(bad, m, n, nil); !errors.Is(err, ErrCorrupt) {
		t.Errorf("NaN step: %v", err)
	}
	_, err = decoder{}.Decode(context.Background(), codec.Section{DType: tensor.F32, Shape: []int64{int64(m), int64(n)},
		RawSize: int64(4 * m * n), Params: []byte{Version}}, p, nil)
	if !errors.Is(err, codec.ErrCorrupt) {
		t.Errorf("version-2 payload under version-1 parameters: %v", err)
	}
}

// TestLevelsEncoder: `ecsq:levels` writes version 2 and needs H; other
// arguments are refused.
func TestLevelsEncoder(t *testing.T) {
	spec, arg, err := codec.Lookup("ecsq:levels")
	if err != nil {
		t.Fatal(err)
	}
	enc, err := spec.NewEncoder(codec.Config{Arg: arg, Bits: 3})
	if err != nil {
		t.Fatal(err)
	}
	m, n := 32, 64
	in := codec.Input{Info: tensor.Info{Name: "w", DType: tensor.F32, Shape: []int64{int64(m), int64(n)}},
		Weights: randW(m, n, 3)}
	if _, err := enc.Encode(context.Background(), in); err == nil {
		t.Error("ecsq:levels encoded without H")
	}
	in.H = correlatedH(n, 9, 2*n, 3)
	out, err := enc.Encode(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	if out.Params[0] != VersionLevels || out.Payload[0] != VersionLevels {
		t.Errorf("params %v, payload version %d", out.Params, out.Payload[0])
	}
	if _, err := spec.NewEncoder(codec.Config{Arg: "bogus", Bits: 3}); err == nil {
		t.Error("ecsq:bogus accepted")
	}
}

// TestTuneRowScales: refitting the row scales after coding never raises
// the proxy loss, lowers it on LLM-like weights, changes only the scales
// (same integers, same rate up to nothing) and still decodes bit for bit.
func TestTuneRowScales(t *testing.T) {
	ctx := context.Background()
	m, n := 128, 256
	W := randW(m, n, 31)
	H := correlatedH(n, 30, 2*n, 7)
	f, err := ldlq.NewFactor(H, n, ldlq.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, lv := range [][]uint8{nil, codec.Levels(H, n)} {
		base, err := EncodeFactor(ctx, W, m, n, f, 0.4, Options{Levels: lv})
		if err != nil {
			t.Fatal(err)
		}
		tuned, err := EncodeFactor(ctx, W, m, n, f, 0.4, Options{Levels: lv, TuneRowScales: true, H: H})
		if err != nil {
			t.Fatal(err)
		}
		if len(tuned.Payload) != len(base.Payload) || !slices.Equal(tuned.codes, base.codes) {
			t.Fatal("tuning changed the integers or the size")
		}
		l0, _ := ldlq.ProxyLoss(W, base.What, m, n, H)
		l1, _ := ldlq.ProxyLoss(W, tuned.What, m, n, H)
		t.Logf("levels %v: proxy loss %.5g -> %.5g (%.2f%%)", lv != nil, l0, l1, 100*(l1/l0-1))
		if !(l1 < l0) {
			t.Errorf("tuned proxy loss %g not below %g", l1, l0)
		}
		got, err := Decode(tuned.Payload, m, n, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := range got {
			if math.Float32bits(got[i]) != math.Float32bits(tuned.What[i]) {
				t.Fatalf("value %d decodes to %v, encoder had %v", i, got[i], tuned.What[i])
			}
		}
	}
}
