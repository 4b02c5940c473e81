package gptq

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/nwc-project/nwc/internal/testmat"
	"github.com/nwc-project/nwc/loader/codec/rtn"
	"github.com/nwc-project/nwc/ortcodec/ldlq"
)

var correlatedH = testmat.CorrelatedH

// randW draws weights with per-row scales and a few outliers, like LLM
// weights.
func randW(m, n int, seed uint64) []float32 { return testmat.LLMW(m, n, seed, 200, 6) }

func decodeRTN(t *testing.T, q rtn.Quantizer, m, n int, payload []byte) []float32 {
	t.Helper()
	raw, err := rtn.Decode([]int64{int64(m), int64(n)}, q.Params(), payload, nil)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]float32, m*n)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return out
}

// TestIdentityIsRTN: with H = I (or nil, or any diagonal H) GPTQ is RTN,
// byte for byte.
func TestIdentityIsRTN(t *testing.T) {
	ctx := context.Background()
	for _, shape := range [][2]int{{5, 300}, {16, 128}, {3, 7}, {9, 260}} {
		m, n := shape[0], shape[1]
		W := randW(m, n, uint64(n))
		W[0] = 0
		W[1] = float32(math.Copysign(0, -1))
		diag := make([]float64, n*n)
		for i := 0; i < n; i++ {
			diag[i*n+i] = 1 + float64(i%3)
		}
		for bits := 2; bits <= 8; bits += 2 {
			for _, g := range rtn.Groups {
				want := rtn.Quantizer{Bits: bits, Group: g}.EncodeMatrix(W, m, n)
				for name, H := range map[string][]float64{"nil": nil, "diagonal": diag} {
					for _, act := range []bool{false, true} {
						res, err := Quantize(ctx, W, m, n, H, Options{Bits: bits, Group: g, ActOrder: act, Workers: 2})
						if err != nil {
							t.Fatal(err)
						}
						if !bytes.Equal(res.Payload, want) {
							t.Fatalf("%dx%d bits %d H %s act-order %v: payload differs from RTN-g%d", m, n, bits, name, act, g)
						}
					}
				}
			}
		}
	}
}

// TestBeatsRTN: on correlated H, GPTQ's proxy loss is well below RTN's, and
// the payload decodes to exactly What.
func TestBeatsRTN(t *testing.T) {
	ctx := context.Background()
	m, n := 64, 384
	W := randW(m, n, 2)
	H := correlatedH(n, 32, 3*n, 3)
	for _, bits := range []int{2, 3, 4} {
		q := rtn.Quantizer{Bits: bits, Group: 128}
		rtn := q.Quantize(W, m, n, nil)
		res, err := Quantize(ctx, W, m, n, H, Options{Bits: bits})
		if err != nil {
			t.Fatal(err)
		}
		if res.Note != "" || res.Dead != 0 {
			t.Errorf("note %q dead %d", res.Note, res.Dead)
		}
		if int64(len(res.Payload)) != q.PayloadSize(m, n) {
			t.Fatalf("payload %d bytes, want %d", len(res.Payload), q.PayloadSize(m, n))
		}
		got := decodeRTN(t, q, m, n, res.Payload)
		for i := range got {
			if got[i] != res.What[i] {
				t.Fatalf("bits %d: decoded[%d] = %v, GPTQ computed %v", bits, i, got[i], res.What[i])
			}
		}
		lr, _ := ldlq.ProxyLoss(W, rtn, m, n, H)
		lg, _ := ldlq.ProxyLoss(W, res.What, m, n, H)
		mr, _ := ldlq.ProxyLoss(W, rtn, m, n, nil)
		mg, _ := ldlq.ProxyLoss(W, res.What, m, n, nil)
		t.Logf("bits %d: proxy loss RTN %.4g, GPTQ %.4g (ratio %.3f); MSE %.4g vs %.4g", bits, lr, lg, lg/lr, mr, mg)
		if lg > 0.5*lr {
			t.Errorf("bits %d: GPTQ proxy loss %g not below half of RTN %g", bits, lg, lr)
		}
	}
}

// reference is a literal, column-at-a-time GPTQ over the whole matrix with
// eager updates (no lazy blocks) and H^-1 computed by explicit inversion
// followed by an upper Cholesky: an independent check of the batching and of
// the J K^-1 J shortcut.
func reference(W []float32, m, n int, H []float64, bits int) []float32 {
	a := make([]float64, n*n)
	copy(a, H)
	var mean float64
	for i := 0; i < n; i++ {
		mean += a[i*n+i]
	}
	for i := 0; i < n; i++ {
		a[i*n+i] += 0.01 * mean / float64(n)
	}
	if err := ldlq.Cholesky(a, n, 1); err != nil {
		panic(err)
	}
	ci, _ := ldlq.InvertLower(a, n, 1)
	hinv := make([]float64, n*n) // C^-T C^-1
	for i := 0; i < n; i++ {
		for j := 0; j < n; j++ {
			var s float64
			for k := max(i, j); k < n; k++ {
				s += ci[k*n+i] * ci[k*n+j]
			}
			hinv[i*n+j] = s
		}
	}
	if err := ldlq.Cholesky(hinv, n, 1); err != nil { // lower G, U = G^T
		panic(err)
	}
	U := func(i, j int) float64 { return hinv[j*n+i] }
	w := make([]float64, m*n)
	for i, v := range W {
		w[i] = float64(v)
	}
	out := make([]float32, m*n)
	maxq := float32(int(1)<<bits - 1)
	for r := 0; r < m; r++ {
		row := w[r*n : (r+1)*n]
		var scale, zero float32
		for c := 0; c < n; c++ {
			if c%128 == 0 {
				_, _, scale, zero = params(row[c:min(c+128, n)], bits)
			}
			v := float32(row[c])
			code := min(max(float32(math.RoundToEven(float64(v/scale)))+zero, 0), maxq)
			q := (code - zero) * scale
			out[r*n+c] = q
			e := (row[c] - float64(q)) / U(c, c)
			for j := c + 1; j < n; j++ {
				row[j] -= e * U(c, j)
			}
		}
	}
	return out
}

// TestMatchesReference: GPTQ equals the literal algorithm up to rare
// rounding ties flipped by float64 summation order (group = block = 128,
// where lazy and eager updates agree mathematically).
func TestMatchesReference(t *testing.T) {
	m, n := 24, 300
	W := randW(m, n, 5)
	H := correlatedH(n, 40, 2*n, 6)
	res, err := Quantize(context.Background(), W, m, n, H, Options{Bits: 3})
	if err != nil {
		t.Fatal(err)
	}
	ref := reference(W, m, n, H, 3)
	diff := 0
	for i := range ref {
		if ref[i] != res.What[i] {
			diff++
		}
	}
	lg, _ := ldlq.ProxyLoss(W, res.What, m, n, H)
	lr, _ := ldlq.ProxyLoss(W, ref, m, n, H)
	t.Logf("%d of %d values differ; proxy loss %.6g vs reference %.6g", diff, len(ref), lg, lr)
	if diff > len(ref)/100 || math.Abs(lg-lr) > 0.01*lr {
		t.Errorf("%d values differ from the reference; loss %g vs %g", diff, lg, lr)
	}
}

func TestDeterministicAndDead(t *testing.T) {
	m, n := 21, 200
	W := randW(m, n, 8)
	H := correlatedH(n, 10, 400, 9)
	for _, c := range []int{3, 150} { // dead columns
		for j := 0; j < n; j++ {
			H[c*n+j], H[j*n+c] = 0, 0
		}
	}
	a, err := Quantize(context.Background(), W, m, n, H, Options{Bits: 4, Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Quantize(context.Background(), W, m, n, H, Options{Bits: 4, Workers: 4})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Payload, b.Payload) {
		t.Fatal("payload depends on workers")
	}
	if a.Dead != 2 {
		t.Errorf("dead %d, want 2", a.Dead)
	}
	for r := 0; r < m; r++ {
		if a.What[r*n+3] != 0 || a.What[r*n+150] != 0 {
			t.Fatalf("dead column not zero in row %d", r)
		}
	}
}

func TestHostile(t *testing.T) {
	ctx := context.Background()
	W := randW(4, 10, 1)
	H := correlatedH(10, 3, 20, 1)
	nan := append([]float64(nil), H...)
	nan[7] = math.Inf(-1)
	cases := []struct {
		name string
		W    []float32
		m, n int
		H    []float64
		opts Options
		want error
	}{
		{"bits 0", W, 4, 10, H, Options{}, ErrOptions},
		{"bits 9", W, 4, 10, H, Options{Bits: 9}, ErrOptions},
		{"group", W, 4, 10, H, Options{Bits: 4, Group: -3}, ErrOptions},
		{"damping", W, 4, 10, H, Options{Bits: 4, Damping: -1}, ErrOptions},
		{"short W", W[:30], 4, 10, H, Options{Bits: 4}, ErrShape},
		{"zero m", nil, 0, 10, nil, Options{Bits: 4}, ErrShape},
		{"huge", W, 1 << 40, 1 << 30, nil, Options{Bits: 4}, ErrShape},
		{"short H", W, 4, 10, H[:50], Options{Bits: 4}, ErrShape},
		{"inf H", W, 4, 10, nan, Options{Bits: 4}, ErrNotFinite},
		{"zero H", W, 4, 10, make([]float64, 100), Options{Bits: 4}, nil}, // all dead: H = I
		{"negative H", W, 4, 10, func() []float64 {
			h := make([]float64, 100)
			for i := 0; i < 10; i++ {
				h[i*10+i] = -1
			}
			return h
		}(), Options{Bits: 4}, ErrNotPD},
	}
	for _, c := range cases {
		_, err := Quantize(ctx, c.W, c.m, c.n, c.H, c.opts)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: err %v, want %v", c.name, err, c.want)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := Quantize(cctx, W, 4, 10, H, Options{Bits: 4}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

func TestPackRTN(t *testing.T) {
	q := rtn.Quantizer{Bits: 3, Group: 4}
	if _, err := rtn.Pack(q, 2, 5, make([]uint16, 4), make([]uint8, 4), make([]uint8, 10)); err != nil {
		t.Fatal(err)
	}
	if _, err := rtn.Pack(q, 2, 5, make([]uint16, 3), make([]uint8, 4), make([]uint8, 10)); err == nil {
		t.Error("short scales accepted")
	}
	codes := make([]uint8, 10)
	codes[3] = 8
	if _, err := rtn.Pack(q, 2, 5, make([]uint16, 4), make([]uint8, 4), codes); err == nil {
		t.Error("code 8 accepted for 3 bits")
	}
}

// BenchmarkSmolLM2Down: GPTQ 4-bit g128 of a 576 x 1536 matrix.
func BenchmarkSmolLM2Down(b *testing.B) {
	m, n := 576, 1536
	W := randW(m, n, 1)
	H := correlatedH(n, 64, 256, 2)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := Quantize(context.Background(), W, m, n, H, Options{Bits: 4}); err != nil {
			b.Fatal(err)
		}
	}
}

// TestActOrder: on random ill-conditioned H (correlated inputs whose scales
// span e^8), act-order with static groups lowers GPTQ's proxy loss on
// average over plain order; its payload is an ordinary rtn section of the
// same size that decodes to exactly What, in the original column order.
func TestActOrder(t *testing.T) {
	ctx := context.Background()
	m, n := 32, 256
	var sumRatio float64
	var runs, wins int
	for seed := uint64(1); seed <= 4; seed++ {
		W := randW(m, n, 10+seed)
		H := correlatedH(n, 24, 2*n, 20+seed)
		rng := rand.New(rand.NewPCG(seed, 3))
		d := make([]float64, n)
		for i := range d {
			d[i] = math.Exp(4 * (rng.Float64() - 0.5))
		}
		for i := 0; i < n; i++ {
			for j := 0; j < n; j++ {
				H[i*n+j] *= d[i] * d[j]
			}
		}
		for _, g := range []int{32, 128} {
			q := rtn.Quantizer{Bits: 3, Group: g}
			plain, err := Quantize(ctx, W, m, n, H, Options{Bits: 3, Group: g})
			if err != nil {
				t.Fatal(err)
			}
			act, err := Quantize(ctx, W, m, n, H, Options{Bits: 3, Group: g, ActOrder: true})
			if err != nil {
				t.Fatal(err)
			}
			if len(act.Payload) != len(plain.Payload) || !bytes.Equal(act.Codec.Params(), q.Params()) {
				t.Fatalf("act-order section: %d bytes, params %x", len(act.Payload), act.Codec.Params())
			}
			got := decodeRTN(t, q, m, n, act.Payload)
			for i := range got {
				if got[i] != act.What[i] {
					t.Fatalf("decoded[%d] = %v, act-order GPTQ computed %v", i, got[i], act.What[i])
				}
			}
			lp, _ := ldlq.ProxyLoss(W, plain.What, m, n, H)
			la, _ := ldlq.ProxyLoss(W, act.What, m, n, H)
			t.Logf("seed %d group %d: proxy loss plain %.5g, act-order %.5g (ratio %.3f)", seed, g, lp, la, la/lp)
			sumRatio += la / lp
			runs++
			if la < lp {
				wins++
			}
		}
	}
	t.Logf("act-order / plain proxy loss: mean ratio %.3f, lower in %d of %d", sumRatio/float64(runs), wins, runs)
	if sumRatio/float64(runs) >= 0.97 {
		t.Errorf("act-order mean proxy-loss ratio %.3f, want < 0.97", sumRatio/float64(runs))
	}
}

// TestActOrderIsPermutedGPTQ: with one group per row (static and dynamic
// groups then agree), act-order GPTQ is plain GPTQ on W and H permuted by
// descending diag(H), permuted back: an independent check of the
// permutation plumbing.
func TestActOrderIsPermutedGPTQ(t *testing.T) {
	ctx := context.Background()
	m, n := 12, 96
	W := randW(m, n, 31)
	H := correlatedH(n, 12, 2*n, 32)
	for i := 0; i < n; i++ {
		H[i*n+i] *= 1 + float64(i%7)
	}
	perm := make([]int, n)
	permute(H, n, perm)
	Wp := make([]float32, m*n)
	Hp := make([]float64, n*n)
	for i, pi := range perm {
		for r := 0; r < m; r++ {
			Wp[r*n+i] = W[r*n+pi]
		}
		for j, pj := range perm {
			Hp[i*n+j] = H[pi*n+pj]
		}
	}
	act, err := Quantize(ctx, W, m, n, H, Options{Bits: 3, Group: n, ActOrder: true})
	if err != nil {
		t.Fatal(err)
	}
	plain, err := Quantize(ctx, Wp, m, n, Hp, Options{Bits: 3, Group: n})
	if err != nil {
		t.Fatal(err)
	}
	moved := 0
	for i, pi := range perm {
		moved += min(1, abs(i-pi))
		for r := 0; r < m; r++ {
			if act.What[r*n+pi] != plain.What[r*n+i] {
				t.Fatalf("row %d column %d: act-order %v, permuted GPTQ %v", r, pi, act.What[r*n+pi], plain.What[r*n+i])
			}
		}
	}
	if moved < n/2 {
		t.Errorf("the permutation moves only %d of %d columns", moved, n)
	}
}

func abs(x int) int { return max(x, -x) }
