//go:build cgo

package ortcodec

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nwc-project/nwc/internal/ortenv"
	"github.com/nwc-project/nwc/internal/ortenv/orttest"
	"github.com/nwc-project/nwc/ortcodec/entropy"
)

const tiny = "testdata/tinycodec" // made by scripts/make_test_codec.py

type expected struct {
	N    int       `json:"n"`
	X    []float64 `json:"x"`
	Q    []int64   `json:"q"`
	Y    []float64 `json:"y"`
	YHat []float64 `json:"y_hat"`
	XHat []float64 `json:"x_hat"`
}

func loadExpected(t testing.TB) expected {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(tiny, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var e expected
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatal(err)
	}
	return e
}

func f32(v []float64) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(x)
	}
	return out
}

// close within 1e-5 relative (absolute below magnitude 1).
func checkClose(t *testing.T, what string, got []float32, want []float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range got {
		if d := math.Abs(float64(got[i]) - want[i]); d > 1e-5*math.Max(1, math.Abs(want[i])) {
			t.Fatalf("%s[%d] = %v, want %v (diff %g)", what, i, got[i], want[i], d)
		}
	}
}

func load(t testing.TB, opts ...Option) *Codec {
	t.Helper()
	orttest.Require(t)
	c, err := loadDir(tiny, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	})
	return c
}

func TestExpectedOutputs(t *testing.T) {
	e := loadExpected(t)
	for _, opts := range [][]Option{
		nil,
		{WithBatch(3), WithSessions(2), WithThreads(1)},
		{WithBatch(1)},
	} {
		c := load(t, opts...)
		y, err := c.Encode(context.Background(), f32(e.X), e.Q)
		if err != nil {
			t.Fatal(err)
		}
		checkClose(t, "y", y, e.Y)
		xh, err := c.Decode(context.Background(), f32(e.YHat), e.Q)
		if err != nil {
			t.Fatal(err)
		}
		checkClose(t, "x_hat", xh, e.XHat)
	}
}

func randomChunks(n int, seed uint64) ([]float32, []int64) {
	r := rand.New(rand.NewPCG(seed, 1))
	x := make([]float32, n*D)
	q := make([]int64, n)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	for i := range q {
		q[i] = int64(r.IntN(NumLevels))
	}
	return x, q
}

// Batching and session count must not change results beyond float noise.
func TestBatchingConsistent(t *testing.T) {
	x, q := randomChunks(1000, 7)
	ref, err := load(t).Encode(context.Background(), x, q)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]float64, len(ref))
	for i, v := range ref {
		want[i] = float64(v)
	}
	for _, b := range []int{1, 7, 256, 999, 1000, 4096} {
		c := load(t, WithBatch(b), WithSessions(3), WithThreads(1))
		got, err := c.Encode(context.Background(), x, q)
		if err != nil {
			t.Fatal(err)
		}
		checkClose(t, fmt.Sprintf("batch %d", b), got, want)
	}
	// empty input
	got, err := load(t).Decode(context.Background(), nil, nil)
	if err != nil || len(got) != 0 {
		t.Fatalf("empty: %v %v", got, err)
	}
}

// The whole latent path: encode, quantize, entropy code, decode, dequantize,
// decode network; must equal decoding the quantized latents directly.
func TestLatentPipeline(t *testing.T) {
	c := load(t, WithBatch(100))
	x, q := randomChunks(777, 3)
	ctx := context.Background()
	y, err := c.Encode(ctx, x, q)
	if err != nil {
		t.Fatal(err)
	}
	s, err := entropy.Quantize(c.Tables(), y, nil)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := entropy.EncodeStreams(c.Tables(), s, 128, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := entropy.DecodeStreams(c.Tables(), payload, len(s), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	yh := entropy.Dequantize(c.Tables(), s2, nil)
	xh, err := c.Decode(ctx, yh, q)
	if err != nil {
		t.Fatal(err)
	}
	direct, err := c.Decode(ctx, entropy.Dequantize(c.Tables(), s, nil), q)
	if err != nil {
		t.Fatal(err)
	}
	for i := range xh {
		if xh[i] != direct[i] {
			t.Fatalf("x_hat[%d] %v != %v", i, xh[i], direct[i])
		}
	}
	t.Logf("%d chunks -> %d bytes (%.3f bits/weight, random untrained codec)", len(q), len(payload), 8*float64(len(payload))/float64(len(x)))
}

func TestCompressDecompress(t *testing.T) {
	c := load(t, WithBatch(500), WithSessions(2))
	x, q := randomChunks(5000, 11)
	ctx := context.Background()
	payload, err := roundTripCompress(c, ctx, x, q, []byte{0xAA})
	if err != nil {
		t.Fatal(err)
	}
	if payload[0] != 0xAA {
		t.Fatal("dst prefix lost")
	}
	got, err := roundTripDecompress(c, ctx, payload[1:], q)
	if err != nil {
		t.Fatal(err)
	}
	y, _ := c.Encode(ctx, x, q)
	s, _ := entropy.Quantize(c.Tables(), y, nil)
	want, _ := c.Decode(ctx, entropy.Dequantize(c.Tables(), s, nil), q)
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("%d: %v != %v", i, got[i], want[i])
		}
	}
	if _, err := roundTripDecompress(c, ctx, payload[1:len(payload)-1], q); !errors.Is(err, entropy.ErrCorrupt) {
		t.Fatalf("truncated: %v", err)
	}
	t.Logf("%d weights -> %d bytes", len(x), len(payload)-1)
}

func TestInputErrors(t *testing.T) {
	c := load(t)
	ctx := context.Background()
	if _, err := c.Encode(ctx, make([]float32, 17), []int64{0}); !errors.Is(err, ErrInput) {
		t.Errorf("length: %v", err)
	}
	if _, err := c.Decode(ctx, make([]float32, 32), []int64{0, 4}); !errors.Is(err, ErrInput) {
		t.Errorf("level 4: %v", err)
	}
	if _, err := c.Decode(ctx, make([]float32, 16), []int64{-1}); !errors.Is(err, ErrInput) {
		t.Errorf("level -1: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := c.Encode(cctx, make([]float32, 16), []int64{0}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	// still usable after a cancelled call (terminate flag cleared)
	if _, err := c.Encode(ctx, make([]float32, 16), []int64{0}); err != nil {
		t.Errorf("after cancel: %v", err)
	}
	// per session of each network: 3 tensors, run options, the session
	if n, want := liveObjects.Load(), int64(2*5*cap(c.dec.free)); n != want {
		t.Errorf("%d live ORT objects with one codec open (%d sessions per network), want %d", n, cap(c.dec.free), want)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if n := liveObjects.Load(); n != 0 {
		t.Errorf("%d live ORT objects after Close", n)
	}
	if err := c.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	if _, err := c.Encode(ctx, make([]float32, 16), []int64{0}); !errors.Is(err, ErrClosed) {
		t.Errorf("closed: %v", err)
	}
	var nilCodec *Codec
	if err := nilCodec.Close(); err != nil {
		t.Error(err)
	}
	if err := (&Codec{}).Close(); err != nil {
		t.Error("half-built Close:", err)
	}
}

// Cancelling during long runs stops them with ctx's error and leaves the
// codec usable.
func TestCancelDuringRun(t *testing.T) {
	c := load(t, WithBatch(50000), WithSessions(2))
	x, q := randomChunks(400000, 9)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := c.Decode(ctx, x, q)
		done <- err
	}()
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v", err)
	}
	if _, err := c.Decode(context.Background(), x[:16*10], q[:10]); err != nil {
		t.Fatal("after cancel:", err)
	}
}

func copyDir(t *testing.T, mutate func(dir string)) string {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{EncoderFile, DecoderFile, EntropyFile, CardFile} {
		b, err := os.ReadFile(filepath.Join(tiny, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mutate(dir)
	return dir
}

func TestLoadErrors(t *testing.T) {
	orttest.Require(t)
	swap := func(dir string) {
		b, _ := os.ReadFile(filepath.Join(dir, DecoderFile))
		os.WriteFile(filepath.Join(dir, EncoderFile), b, 0o644)
	}
	cases := []struct {
		name   string
		mutate func(string)
		is     error
		msg    string
	}{
		{"no-encoder", func(d string) { os.Remove(filepath.Join(d, EncoderFile)) }, ErrModel, "encoder.onnx"},
		{"no-card", func(d string) { os.Remove(filepath.Join(d, CardFile)) }, ErrModel, "card.json"},
		{"bad-card", func(d string) { os.WriteFile(filepath.Join(d, CardFile), []byte("[1]"), 0o644) }, ErrModel, "card.json"},
		{"swapped", swap, ErrModel, "inputs are "},
		{"not-onnx", func(d string) { os.WriteFile(filepath.Join(d, DecoderFile), []byte("garbage"), 0o644) }, ErrModel, "decoder.onnx"},
		{"bad-cdf", func(d string) {
			b, _ := os.ReadFile(filepath.Join(d, EntropyFile))
			os.WriteFile(filepath.Join(d, EntropyFile), []byte(strings.Replace(string(b), `"cdf": [0, `, `"cdf": [1, `, 1)), 0o644)
		}, entropy.ErrBadCDF, "channel 0"},
		{"channels", func(d string) {
			var m map[string]any
			b, _ := os.ReadFile(filepath.Join(d, EntropyFile))
			json.Unmarshal(b, &m)
			m["channels"] = m["channels"].([]any)[:15]
			b, _ = json.Marshal(m)
			os.WriteFile(filepath.Join(d, EntropyFile), b, 0o644)
		}, ErrModel, "15 channels"},
	}
	for _, tc := range cases {
		dir := copyDir(t, tc.mutate)
		c, err := loadDir(dir)
		if c != nil {
			c.Close()
		}
		if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: got %v, want %v containing %q", tc.name, err, tc.is, tc.msg)
		} else {
			t.Logf("%s: %v", tc.name, err)
		}
	}
	for _, o := range []Option{WithBatch(0), WithSessions(0), WithThreads(-1), WithProvider("tpu")} {
		if _, err := loadDir(tiny, o); err == nil {
			t.Error("invalid option accepted")
		}
	}
}

// CUDA: either it loads and matches the expected outputs, or Load says why
// with ortenv.ErrProviderUnavailable.
func TestCUDA(t *testing.T) {
	orttest.Require(t)
	c, err := loadDir(tiny, WithProvider("cuda"))
	if err != nil {
		if !errors.Is(err, ortenv.ErrProviderUnavailable) {
			t.Fatalf("cuda failure does not wrap ErrProviderUnavailable: %v", err)
		}
		t.Skipf("CUDA unavailable: %v", err)
	}
	defer c.Close()
	e := loadExpected(t)
	xh, err := c.Decode(context.Background(), f32(e.YHat), e.Q)
	if err != nil {
		t.Fatal(err)
	}
	checkClose(t, "cuda x_hat", xh, e.XHat)
}

func BenchmarkDecodeTiny(b *testing.B) {
	x, q := randomChunks(1<<16, 1)
	for _, batch := range []int{1024, 16384, 65536} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			c := load(b, WithBatch(batch))
			b.ReportAllocs()
			b.SetBytes(int64(len(x) * 4))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := c.Decode(context.Background(), x, q); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(x))*float64(b.N)/b.Elapsed().Seconds(), "weights/s")
		})
	}
}
