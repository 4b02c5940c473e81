package ecsq

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math"
	"testing"

	"github.com/nwc-project/nwc/internal/testmat"
	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/stage"
	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/ortcodec/ldlq"
)

var correlatedH = testmat.CorrelatedH

// randW draws LLM-like weights: per-row scales, heavy tails, a few outliers.
func randW(m, n int, seed uint64) []float32 { return testmat.LLMW(m, n, seed, 300, 12) }

func entropyBits(codes []int32) float64 {
	hist := map[int32]int{}
	for _, v := range codes {
		hist[v]++
	}
	N := float64(len(codes))
	var h float64
	for _, c := range hist {
		p := float64(c) / N
		h -= float64(c) * math.Log2(p)
	}
	return h
}

func TestRoundTrip(t *testing.T) {
	ctx := context.Background()
	for _, shape := range [][2]int{{1, 1}, {3, 7}, {17, 300}, {64, 256}} {
		m, n := shape[0], shape[1]
		W := randW(m, n, uint64(m*n))
		W[0] = 0
		var H []float64
		if n > 1 {
			H = correlatedH(n, n/4+1, 2*n, 3)
		}
		f, err := ldlq.NewFactor(H, n, ldlq.Options{})
		if err != nil {
			t.Fatal(err)
		}
		for _, step := range []float64{0.01, 0.3, 1.5} {
			res, err := EncodeFactor(ctx, W, m, n, f, step, Options{StreamSymbols: 1000})
			if err != nil {
				t.Fatal(err)
			}
			for _, workers := range []int{1, 3} {
				got, err := DecodeWorkers(res.Payload, m, n, nil, workers)
				if err != nil {
					t.Fatalf("%dx%d step %g: %v", m, n, step, err)
				}
				for i := range got {
					if math.Float32bits(got[i]) != math.Float32bits(res.What[i]) {
						t.Fatalf("%dx%d step %g: value %d decodes to %v, encoder had %v", m, n, step, i, got[i], res.What[i])
					}
				}
			}
			// The one-call API gives the same bytes.
			p, err := Encode(ctx, W, m, n, H, step)
			if err != nil {
				t.Fatal(err)
			}
			res2, _ := EncodeFactor(ctx, W, m, n, f, step, Options{})
			if !bytes.Equal(p, res2.Payload) {
				t.Fatalf("Encode differs from EncodeFactor")
			}
		}
	}
}

func TestZeroRowsAndEscapes(t *testing.T) {
	m, n := 80, 1024 // 81920 > 1<<16 symbols: a value seen once is escaped
	W := randW(m, n, 9)
	for c := 0; c < n; c++ {
		W[2*n+c] = 0 // a zero row
	}
	W[4*n+7] = 50 // a huge outlier: escaped
	W[5*n+1] = -1e-30
	res, err := EncodeFactor(context.Background(), W, m, n, nil, 0.05, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Escapes == 0 {
		t.Error("no escapes for a 50-sigma outlier at step 0.05")
	}
	got, err := Decode(res.Payload, m, n, make([]float32, 3))
	if err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if got[i] != res.What[i] {
			t.Fatalf("value %d: %v vs %v", i, got[i], res.What[i])
		}
	}
	if math.Abs(float64(got[4*n+7]-50)) > 0.05*50 {
		t.Errorf("outlier decoded to %v", got[4*n+7])
	}
	for c := 0; c < n; c++ {
		if got[2*n+c] != 0 {
			t.Fatal("zero row not zero")
		}
	}
}

// TestRate: the rate falls as the step grows, and the payload is within 2%
// of the empirical entropy of the integers plus the side information.
func TestRate(t *testing.T) {
	ctx := context.Background()
	m, n := 256, 512
	W := randW(m, n, 4)
	f, err := ldlq.NewFactor(correlatedH(n, 40, 2*n, 5), n, ldlq.Options{})
	if err != nil {
		t.Fatal(err)
	}
	prev := math.Inf(1)
	for _, step := range []float64{0.02, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2} {
		res, err := EncodeFactor(ctx, W, m, n, f, step, Options{})
		if err != nil {
			t.Fatal(err)
		}
		h := entropyBits(res.codes)
		ideal := h + 8*float64(res.SideBytes)
		real := 8 * float64(len(res.Payload))
		t.Logf("step %-5g: %.4f bits/weight (entropy %.4f + side %.4f; overhead %.3f%%), %d escapes, table %d bytes",
			step, res.Bits, h/float64(m*n), 8*float64(res.SideBytes)/float64(m*n), 100*(real/ideal-1), res.Escapes, res.SideBytes-5-2*m)
		if res.Bits >= prev {
			t.Errorf("step %g: rate %g not below %g", step, res.Bits, prev)
		}
		prev = res.Bits
		if real < h || real > 1.02*ideal {
			t.Errorf("step %g: %g bits, entropy %g + side %d bytes", step, real, h, res.SideBytes)
		}
	}
}

// TestSearchAndFeedback: StepForBits hits the target; at equal real rate
// LDLQ feedback lowers the proxy loss on correlated H.
func TestSearchAndFeedback(t *testing.T) {
	ctx := context.Background()
	m, n := 128, 384
	W := randW(m, n, 6)
	H := correlatedH(n, 32, 3*n, 7)
	fH, err := ldlq.NewFactor(H, n, ldlq.Options{})
	if err != nil {
		t.Fatal(err)
	}
	f1, err := ldlq.NewFactor(H, n, ldlq.Options{BlockSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, bits := range []float64{2, 3, 4} {
		plain, err := StepForBits(ctx, W, m, n, nil, bits, Options{}, SearchOptions{})
		if err != nil {
			t.Fatal(err)
		}
		fb, err := StepForBits(ctx, W, m, n, fH, bits, Options{}, SearchOptions{})
		if err != nil {
			t.Fatal(err)
		}
		fb1, err := StepForBits(ctx, W, m, n, f1, bits, Options{}, SearchOptions{})
		if err != nil {
			t.Fatal(err)
		}
		lp, _ := ldlq.ProxyLoss(W, plain.What, m, n, H)
		lf, _ := ldlq.ProxyLoss(W, fb.What, m, n, H)
		l1, _ := ldlq.ProxyLoss(W, fb1.What, m, n, H)
		t.Logf("target %g: no feedback %.4f b/w step %.4f loss %.4g; LDLQ-128 %.4f b/w step %.4f loss %.4g (x%.3f); LDLQ-1 %.4f b/w loss %.4g (x%.3f)",
			bits, plain.Bits, plain.Step, lp, fb.Bits, fb.Step, lf, lf/lp, fb1.Bits, l1, l1/lp)
		for _, r := range []*Result{plain, fb, fb1} {
			if math.Abs(r.Bits-bits) > 0.01 {
				t.Errorf("target %g: got %g bits/weight", bits, r.Bits)
			}
		}
		if lf > 0.8*lp {
			t.Errorf("target %g: LDLQ loss %g not 20%% below %g", bits, lf, lp)
		}
	}
}

func TestHostileEncode(t *testing.T) {
	ctx := context.Background()
	W := randW(4, 10, 1)
	if _, err := Encode(ctx, W, 4, 10, nil, 0); !errors.Is(err, ErrStep) {
		t.Errorf("step 0: %v", err)
	}
	if _, err := Encode(ctx, W, 4, 10, nil, math.NaN()); !errors.Is(err, ErrStep) {
		t.Errorf("step NaN: %v", err)
	}
	if _, err := Encode(ctx, W, 4, 9, nil, 0.1); !errors.Is(err, ErrShape) {
		t.Errorf("shape: %v", err)
	}
	if _, err := Encode(ctx, W, 4, 0, nil, 0.1); err == nil {
		t.Error("n = 0 accepted")
	}
	W[3] = float32(math.NaN())
	if _, err := Encode(ctx, W, 4, 10, nil, 0.1); !errors.Is(err, ldlq.ErrNotFinite) {
		t.Errorf("NaN: %v", err)
	}
	f, _ := ldlq.NewFactor(nil, 11, ldlq.Options{})
	if _, err := EncodeFactor(ctx, randW(4, 10, 1), 4, 10, f, 0.1, Options{}); !errors.Is(err, ErrShape) {
		t.Errorf("factor size: %v", err)
	}
	if _, err := StepForBits(ctx, randW(4, 10, 1), 4, 10, nil, -1, Options{}, SearchOptions{}); err == nil {
		t.Error("negative bits accepted")
	}
}

func TestHostileDecode(t *testing.T) {
	m, n := 9, 40
	res, err := EncodeFactor(context.Background(), randW(m, n, 2), m, n, nil, 0.2, Options{StreamSymbols: 64})
	if err != nil {
		t.Fatal(err)
	}
	p := res.Payload
	if _, err := Decode(p, m, n+1, nil); !errors.Is(err, ErrCorrupt) {
		t.Errorf("wrong shape: %v", err)
	}
	if _, err := Decode(p, 0, n, nil); !errors.Is(err, ErrShape) {
		t.Errorf("m = 0: %v", err)
	}
	if _, err := Decode(p, 1<<20, 1<<20, nil); !errors.Is(err, ErrShape) {
		t.Errorf("huge: %v", err)
	}
	for i := 0; i < len(p); i++ {
		if _, err := Decode(p[:i], m, n, nil); err == nil {
			t.Fatalf("truncation to %d bytes accepted", i)
		}
	}
	if _, err := Decode(append(append([]byte(nil), p...), 0), m, n, nil); err == nil {
		t.Error("trailing byte accepted")
	}
	bad := func(name string, mut func(b []byte)) {
		b := append([]byte(nil), p...)
		mut(b)
		if _, err := Decode(b, m, n, nil); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v", name, err)
		}
	}
	bad("version", func(b []byte) { b[0] = 2 })
	bad("step inf", func(b []byte) { binary.LittleEndian.PutUint32(b[1:], 0x7f800000) })
	bad("step negative", func(b []byte) { binary.LittleEndian.PutUint32(b[1:], math.Float32bits(-0.2)) })
	bad("scale zero", func(b []byte) { binary.LittleEndian.PutUint16(b[5+2*3:], 0) })
	bad("scale negative", func(b []byte) { binary.LittleEndian.PutUint16(b[5:], 0xbc00) })
	bad("scale nan", func(b []byte) { binary.LittleEndian.PutUint16(b[5:], 0x7e00) })
	// Every single-byte change either errors or decodes (never panics); a
	// change in the side information must not go unnoticed where it is
	// checked.
	for i := range p {
		for _, x := range []byte{1, 0x80, 0xff} {
			b := append([]byte(nil), p...)
			b[i] ^= x
			_, _ = Decode(b, m, n, nil)
		}
	}
}

func TestNormalize(t *testing.T) {
	for _, counts := range [][]int64{{0, 0, 0}, {5}, {1, 0, 0, 0, 1000000}, {3, 3, 3, 0}, make([]int64, 4097)} {
		f := normalize(counts, 1<<16)
		var s int64
		for _, v := range f {
			if v < 1 {
				t.Fatalf("%v: frequency %d", counts, v)
			}
			s += v
		}
		if s != 1<<16 {
			t.Fatalf("%v: sum %d", counts, s)
		}
	}
}

// BenchmarkSmolLM2Down: ECSQ of a 576 x 1536 matrix at 4 bits/weight,
// step search included (factor prepared once); and its decode.
func BenchmarkSmolLM2Down(b *testing.B) {
	m, n := 576, 1536
	W := randW(m, n, 1)
	f, err := ldlq.NewFactor(correlatedH(n, 64, 256, 2), n, ldlq.Options{})
	if err != nil {
		b.Fatal(err)
	}
	var res *Result
	b.Run("search", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if res, err = StepForBits(context.Background(), W, m, n, f, 4, Options{}, SearchOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode", func(b *testing.B) {
		b.SetBytes(int64(4 * m * n))
		dst := make([]float32, m*n)
		for i := 0; i < b.N; i++ {
			if _, err := Decode(res.Payload, m, n, dst); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestDecodeStages: the registered decoder writes Decode's values as bytes
// and counts every weight in stage.Entropy and stage.Rescale.
func TestDecodeStages(t *testing.T) {
	m, n := 9, 70
	res, err := Encode(context.Background(), randW(m, n, 11), m, n, nil, 0.05)
	if err != nil {
		t.Fatal(err)
	}
	want, err := Decode(res, m, n, nil)
	if err != nil {
		t.Fatal(err)
	}
	var st stage.Times
	got, err := decoder{}.Decode(stage.With(context.Background(), &st),
		codec.Section{DType: tensor.F32, Shape: []int64{int64(m), int64(n)}, RawSize: int64(4 * m * n), Params: []byte{Version}}, res, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, tensor.F32Bytes(want, nil)) {
		t.Fatal("registered decoder differs from Decode")
	}
	if st.Items(stage.Entropy) != int64(m*n) || st.Items(stage.Rescale) != int64(m*n) {
		t.Errorf("stage items %d, %d", st.Items(stage.Entropy), st.Items(stage.Rescale))
	}
}
