package ldlq

import (
	"context"
	"errors"
	"math"
	"testing"

	"github.com/nwc-project/nwc/internal/testmat"
)

// correlatedH returns H = X^T X for X = G B + 0.1 noise (N samples, rank-k
// structure): strongly correlated inputs, as real activations are.
var correlatedH = testmat.CorrelatedH

var randW = testmat.GaussW

func rounder(step float32) BlockQuantizer {
	return func(s, e int, w []float32) ([]float32, error) {
		out := make([]float32, len(w))
		for i, v := range w {
			out[i] = float32(math.RoundToEven(float64(v/step))) * step
		}
		return out, nil
	}
}

func TestCholesky(t *testing.T) {
	for _, n := range []int{1, 5, 64, 65, 200} {
		H := correlatedH(n, n/3+1, 2*n, uint64(n))
		for i := 0; i < n; i++ {
			H[i*n+i] += 1e-3 * float64(n)
		}
		for _, workers := range []int{1, 3} {
			a := append([]float64(nil), H...)
			if err := Cholesky(a, n, workers); err != nil {
				t.Fatal(err)
			}
			var maxErr, scale float64
			for i := 0; i < n; i++ {
				for j := 0; j < n; j++ {
					v := dot(a[i*n:i*n+n], a[j*n:j*n+n])
					maxErr = max(maxErr, math.Abs(v-H[i*n+j]))
					scale = max(scale, math.Abs(H[i*n+j]))
				}
			}
			if maxErr > 1e-10*scale {
				t.Errorf("n %d workers %d: |C C^T - H| = %g (scale %g)", n, workers, maxErr, scale)
			}
			inv, err := InvertLower(a, n, workers)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < n; i++ {
				for j := 0; j < n; j++ {
					var v float64
					for k := 0; k < n; k++ {
						v += a[i*n+k] * inv[k*n+j]
					}
					want := 0.0
					if i == j {
						want = 1
					}
					if math.Abs(v-want) > 1e-8 {
						t.Fatalf("n %d: (C C^-1)[%d,%d] = %g", n, i, j, v)
					}
				}
			}
		}
	}
}

// TestFactor checks H_normalized + damping*I = L D L^T with L unit block
// lower triangular and D = blockdiag(C_kk C_kk^T).
func TestFactor(t *testing.T) {
	n, bs := 150, 32
	H := correlatedH(n, 20, 300, 2)
	f, err := NewFactor(H, n, Options{BlockSize: bs, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	var mean float64
	for i := 0; i < n; i++ {
		mean += H[i*n+i]
	}
	mean /= float64(n)
	// D blocks from the untouched diagonal blocks of f.l (C_kk).
	D := make([]float64, n*n)
	for s := 0; s < n; s += bs {
		e := min(s+bs, n)
		for i := s; i < e; i++ {
			for j := s; j < e; j++ {
				D[i*n+j] = dot(f.l[i*n+s:i*n+min(i, j)+1], f.l[j*n+s:j*n+min(i, j)+1])
			}
		}
	}
	L := make([]float64, n*n)
	for i := 0; i < n; i++ {
		for j := 0; j < n; j++ {
			L[i*n+j] = f.L(i, j)
			if (i/bs < j/bs || (i/bs == j/bs && i != j)) && L[i*n+j] != 0 {
				t.Fatalf("L[%d,%d] = %g, want 0", i, j, L[i*n+j])
			}
		}
	}
	LD := make([]float64, n*n) // L D
	for i := 0; i < n; i++ {
		for a := 0; a < n; a++ {
			if la := L[i*n+a]; la != 0 {
				axpy(LD[i*n:(i+1)*n], la, D[a*n:(a+1)*n])
			}
		}
	}
	for i := 0; i < n; i++ {
		for j := 0; j < n; j++ {
			v := dot(LD[i*n:(i+1)*n], L[j*n:(j+1)*n])
			want := H[i*n+j] / mean
			if i == j {
				want += DefaultDamping
			}
			if math.Abs(v-want) > 1e-9*max(1, math.Abs(want)) {
				t.Fatalf("(L D L^T)[%d,%d] = %g, want %g", i, j, v, want)
			}
		}
	}
}

// TestLDLQBeatsRounding: on correlated H, LDLQ + scalar rounding has a much
// lower proxy loss than independent rounding at the same step.
func TestLDLQBeatsRounding(t *testing.T) {
	m, n := 48, 320 // blocks [256, 320), [128, 256), [0, 128)
	W := randW(m, n, 3)
	H := correlatedH(n, 24, 2*n, 4)
	ctx := context.Background()
	for _, step := range []float32{0.25, 0.5, 1} {
		plain, err := Quantize(ctx, W, m, n, nil, Options{}, rounder(step))
		if err != nil {
			t.Fatal(err)
		}
		fb, err := Quantize(ctx, W, m, n, H, Options{}, rounder(step))
		if err != nil {
			t.Fatal(err)
		}
		lp, _ := ProxyLoss(W, plain, m, n, H)
		lf, _ := ProxyLoss(W, fb, m, n, H)
		mp, _ := ProxyLoss(W, plain, m, n, nil)
		mf, _ := ProxyLoss(W, fb, m, n, nil)
		t.Logf("step %g: proxy loss independent %.4g, LDLQ %.4g (ratio %.3f); MSE %.4g vs %.4g", step, lp, lf, lf/lp, mp, mf)
		if lf > 0.8*lp {
			t.Errorf("step %g: LDLQ proxy loss %g not 20%% below independent %g", step, lf, lp)
		}
	}
	// Block size 1 (full LDL, the GPTQ-equivalent order) does better still.
	fb128, _ := Quantize(ctx, W, m, n, H, Options{}, rounder(0.5))
	fb1, err := Quantize(ctx, W, m, n, H, Options{BlockSize: 1}, rounder(0.5))
	if err != nil {
		t.Fatal(err)
	}
	l128, _ := ProxyLoss(W, fb128, m, n, H)
	l1, _ := ProxyLoss(W, fb1, m, n, H)
	t.Logf("step 0.5: block 128 %.4g, block 1 %.4g", l128, l1)
	if l1 > l128 {
		t.Errorf("block 1 loss %g above block 128 %g", l1, l128)
	}
}

// TestIdentityExact: H = nil and H = I (any diagonal H) both give exactly
// the independent rounding.
func TestIdentityExact(t *testing.T) {
	m, n := 7, 300
	W := randW(m, n, 5)
	want := make([]float32, m*n)
	for i, v := range W {
		want[i] = float32(math.RoundToEven(float64(v/0.3))) * 0.3
	}
	diag := make([]float64, n*n)
	for i := 0; i < n; i++ {
		diag[i*n+i] = 1 + float64(i%5)
	}
	for name, H := range map[string][]float64{"nil": nil, "diagonal": diag} {
		got, err := Quantize(context.Background(), W, m, n, H, Options{Workers: 2}, rounder(0.3))
		if err != nil {
			t.Fatal(err)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("%s: value %d = %v, want %v", name, i, got[i], want[i])
			}
		}
	}
}

// TestDeterministic: results do not depend on Workers.
func TestDeterministic(t *testing.T) {
	m, n := 33, 200
	W := randW(m, n, 8)
	H := correlatedH(n, 10, 400, 9)
	a, err := Quantize(context.Background(), W, m, n, H, Options{Workers: 1, BlockSize: 48}, rounder(0.4))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Quantize(context.Background(), W, m, n, H, Options{Workers: 5, BlockSize: 48}, rounder(0.4))
	if err != nil {
		t.Fatal(err)
	}
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("value %d differs across workers", i)
		}
	}
}

// TestBlockOrder: blocks are visited last to first with the right bounds.
func TestBlockOrder(t *testing.T) {
	var got [][2]int
	q := func(s, e int, w []float32) ([]float32, error) {
		got = append(got, [2]int{s, e})
		return w, nil
	}
	if _, err := Quantize(context.Background(), randW(2, 300, 1), 2, 300, nil, Options{}, q); err != nil {
		t.Fatal(err)
	}
	want := [][2]int{{256, 300}, {128, 256}, {0, 128}}
	if len(got) != len(want) {
		t.Fatalf("blocks %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("blocks %v, want %v", got, want)
		}
	}
}

func TestSingularH(t *testing.T) {
	n := 100
	// Rank 3, with a negative eigenvalue of size 0.05 * mean diagonal: the
	// default damping 0.01 fails, 0.1 works.
	H := correlatedH(n, 3, 50, 11)
	var mean float64
	for i := 0; i < n; i++ {
		mean += H[i*n+i]
	}
	mean /= float64(n)
	for i := 0; i < n; i++ {
		for j := 0; j < n; j++ {
			H[i*n+j] -= 0.05 * mean / float64(n) // - 0.05*mean * (1 1^T)/n: eigenvalue -0.05*mean
		}
	}
	f, err := NewFactor(H, n, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if f.Damping != 0.1 || f.Note == "" {
		t.Errorf("damping %g note %q, want 0.1 and a note", f.Damping, f.Note)
	}
	if _, err := NewFactor(H, n, Options{MaxDamping: 0.05}); !errors.Is(err, ErrNotPD) {
		t.Errorf("max damping 0.05: err %v, want ErrNotPD", err)
	}
	// A rank-deficient but PSD H is fine with the default damping.
	if _, err := NewFactor(correlatedH(n, 2, 10, 12), n, Options{}); err != nil {
		t.Errorf("rank-2 PSD H: %v", err)
	}
}

func TestHostile(t *testing.T) {
	ctx := context.Background()
	W := randW(4, 10, 1)
	H := correlatedH(10, 3, 20, 1)
	nan := append([]float64(nil), H...)
	nan[13] = math.NaN()
	Wnan := append([]float32(nil), W...)
	Wnan[5] = float32(math.Inf(1))
	cases := []struct {
		name string
		W    []float32
		m, n int
		H    []float64
		opts Options
		q    BlockQuantizer
		want error
	}{
		{"zero n", nil, 0, 0, nil, Options{}, rounder(1), ErrShape},
		{"negative m", W, -4, 10, H, Options{}, rounder(1), ErrShape},
		{"short W", W[:39], 4, 10, H, Options{}, rounder(1), ErrShape},
		{"wrong n", W, 5, 8, H, Options{}, rounder(1), ErrShape},
		{"short H", W, 4, 10, H[:99], Options{}, rounder(1), ErrShape},
		{"huge n", W, 1, 1 << 40, nil, Options{}, rounder(1), ErrShape},
		{"overflow", W, 1 << 40, 1 << 30, nil, Options{}, rounder(1), ErrShape},
		{"NaN H", W, 4, 10, nan, Options{}, rounder(1), ErrNotFinite},
		{"Inf W", Wnan, 4, 10, H, Options{}, rounder(1), ErrNotFinite},
		{"zero H", W, 4, 10, make([]float64, 100), Options{}, rounder(1), ErrNotPD},
		{"bad block", W, 4, 10, H, Options{BlockSize: -1}, rounder(1), ErrShape},
		{"short output", W, 4, 10, H, Options{}, func(s, e int, w []float32) ([]float32, error) { return w[1:], nil }, ErrShape},
		{"NaN output", W, 4, 10, H, Options{}, func(s, e int, w []float32) ([]float32, error) {
			o := append([]float32(nil), w...)
			o[0] = float32(math.NaN())
			return o, nil
		}, ErrNotFinite},
	}
	for _, c := range cases {
		_, err := Quantize(ctx, c.W, c.m, c.n, c.H, c.opts, c.q)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: err %v, want %v", c.name, err, c.want)
		}
	}
	if _, err := Quantize(ctx, W, 4, 10, H, Options{Damping: -1}, rounder(1)); err == nil {
		t.Error("negative damping accepted")
	}
	qerr := errors.New("boom")
	if _, err := Quantize(ctx, W, 4, 10, H, Options{}, func(s, e int, w []float32) ([]float32, error) { return nil, qerr }); !errors.Is(err, qerr) {
		t.Errorf("quantizer error lost: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := Quantize(cctx, W, 4, 10, H, Options{}, rounder(1)); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	if _, err := ProxyLoss(W, W[:3], 4, 10, nil); !errors.Is(err, ErrShape) {
		t.Errorf("proxy loss shape: %v", err)
	}
}

// BenchmarkSmolLM2Down: the largest linear of smollm2-135m (down_proj,
// 576 x 1536): factor H, then LDLQ with scalar rounding.
func BenchmarkSmolLM2Down(b *testing.B) {
	m, n := 576, 1536
	W := randW(m, n, 1)
	H := correlatedH(n, 64, 256, 2)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f, err := NewFactor(H, n, Options{})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := f.Quantize(context.Background(), W, m, rounder(0.3)); err != nil {
			b.Fatal(err)
		}
	}
}

// TestFitRowScales: the fitted scale is the minimizer of the row's proxy
// loss (nudging it either way raises the loss), recovers a known scale
// exactly, and marks an all-zero coded row with NaN.
func TestFitRowScales(t *testing.T) {
	m, n := 6, 40
	W := make([]float32, m*n)
	U := make([]float32, m*n)
	for i := range W {
		W[i] = float32(math.Sin(float64(i)*0.37)) + 0.1*float32(math.Cos(float64(i)*1.9))
		U[i] = float32(math.Sin(float64(i) * 0.37))
	}
	for c := 0; c < n; c++ {
		W[n+c] = 2.5 * U[n+c] // row 1: exactly 2.5 times its coded row
		U[2*n+c] = 0          // row 2: nothing coded
	}
	H := make([]float64, n*n)
	for i := 0; i < n; i++ {
		for j := 0; j < n; j++ {
			H[i*n+j] = math.Exp(-math.Abs(float64(i-j)) / 3)
		}
		H[i*n+i] += float64(i%5) + 0.5
	}
	for _, h := range [][]float64{nil, H} {
		s, err := FitRowScales(W, U, m, n, h)
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(s[1]-2.5) > 1e-6 {
			t.Errorf("row 1 scale %v, want 2.5", s[1])
		}
		if !math.IsNaN(s[2]) {
			t.Errorf("zero row scale %v, want NaN", s[2])
		}
		loss := func(r int, k float64) float64 {
			Wr, Ur := W[r*n:(r+1)*n], make([]float32, n)
			for c := range Ur {
				Ur[c] = float32(k) * U[r*n+c]
			}
			l, err := ProxyLoss(Wr, Ur, 1, n, h)
			if err != nil {
				t.Fatal(err)
			}
			return l
		}
		for _, r := range []int{0, 3, 5} {
			l0 := loss(r, s[r])
			if !(loss(r, s[r]*1.01) > l0 && loss(r, s[r]*0.99) > l0 && loss(r, 1) >= l0) {
				t.Errorf("row %d: scale %v is not the minimizer", r, s[r])
			}
		}
	}
	if _, err := FitRowScales(W, U[:5], m, n, nil); err == nil {
		t.Error("short U accepted")
	}
}
