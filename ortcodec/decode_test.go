//go:build cgo

package ortcodec

import (
	"context"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/stage"
	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/ortcodec/ldlq"
)

// TestDecodeMatrixMatchesStages: the fused decode pipeline (batches
// dequantized straight into the session tensors, rescaled straight into the
// output, several sessions) gives exactly the values of the stage-by-stage
// reference (DecodeLevels, Dequantize, Decode, row scales), for any session
// count and batch size, and reports every stage.
func TestDecodeMatrixMatchesStages(t *testing.T) {
	t.Run("mlp", func(t *testing.T) { checkDecodeMatrix(t, "testdata", "tinycodec") })
	for _, dir := range shippedCodecs(t) {
		c, err := loadDir(dir, WithDecoderOnly())
		if err != nil {
			t.Fatal(err)
		}
		kind := c.Kind()
		c.Close()
		if kind == KindGain {
			t.Run("gain", func(t *testing.T) { checkDecodeMatrix(t, filepath.Dir(dir), filepath.Base(dir)) })
			break
		}
	}
}

func checkDecodeMatrix(t *testing.T, root, name string) {
	ctx := context.Background()
	dir := filepath.Join(root, name)
	const m, n = 48, 37
	rng := rand.New(rand.NewPCG(3, 4))
	w := make([]float32, m*n)
	for i := range w {
		w[i] = float32(rng.NormFloat64()) * float32(1+i%m) / 50
	}
	h := make([]float64, n*n) // diagonal H: varied column importance -> all four levels
	for j := 0; j < n; j++ {
		h[j*n+j] = float64(1 + rng.IntN(1000))
	}
	enc, err := newEncoder(codec.Config{Env: codec.Env{Codecs: os.DirFS(root)}, Arg: name})
	if err != nil {
		t.Fatal(err)
	}
	defer enc.(interface{ Close() error }).Close()
	out, err := enc.Encode(ctx, codec.Input{Info: tensor.Info{Name: "w", DType: tensor.F32, Shape: []int64{m, n}}, Weights: w, H: h})
	if err != nil {
		t.Fatal(err)
	}
	payload := out.Payload

	// Reference: the stages one after the other.
	ref, err := loadDir(dir, WithSessions(1))
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	hd, err := parseHeader([]int64{m, n}, payload)
	if err != nil {
		t.Fatal(err)
	}
	kc := m / D
	q := make([]int64, n*kc)
	for j, l := range hd.levels {
		for k := 0; k < kc; k++ {
			q[j*kc+k] = int64(l)
		}
	}
	syms, err := ref.DecodeLevels(hd.body, q)
	if err != nil {
		t.Fatal(err)
	}
	yh, err := ref.Dequantize(syms, q, nil)
	if err != nil {
		t.Fatal(err)
	}
	xh, err := ref.Decode(ctx, yh, q)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]float32, m*n)
	for i := 0; i < m; i++ {
		r := tensor.F16ToF32(binary.LittleEndian.Uint16(payload[1+2*i:]))
		for j := 0; j < n; j++ {
			want[i*n+j] = xh[(j*kc+i/D)*D+i%D] * r
		}
	}

	for _, cfg := range []struct{ sessions, batch int }{{1, DefaultBatch}, {2, 7}, {3, 1}, {1, 16}} {
		c, err := loadDir(dir, WithSessions(cfg.sessions), WithBatch(cfg.batch), WithDecoderOnly())
		if err != nil {
			t.Fatal(err)
		}
		var st stage.Times
		got, err := c.DecodeMatrixInto(stage.With(ctx, &st), []int64{m, n}, payload, make([]float32, 3))
		c.Close()
		if err != nil {
			t.Fatalf("%+v: %v", cfg, err)
		}
		for i := range want {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Fatalf("%+v: value %d (row %d, col %d) = %v, reference %v", cfg, i, i/n, i%n, got[i], want[i])
			}
		}
		// The transposed layout holds the same values.
		c2, err := loadDir(dir, WithSessions(cfg.sessions), WithBatch(cfg.batch), WithDecoderOnly())
		if err != nil {
			t.Fatal(err)
		}
		gotT, err := c2.DecodeMatrixTransposed(ctx, []int64{m, n}, payload, nil)
		c2.Close()
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < m; i++ {
			for j := 0; j < n; j++ {
				if math.Float32bits(gotT[j*m+i]) != math.Float32bits(want[i*n+j]) {
					t.Fatalf("%+v: transposed value (%d, %d) = %v, reference %v", cfg, j, i, gotT[j*m+i], want[i*n+j])
				}
			}
		}
		if st.Items(stage.Entropy) != m*n || st.Items(stage.Network) != m*n || st.Duration(stage.Network) <= 0 {
			t.Fatalf("%+v: stages entropy %d network %d (%v) weights, want %d", cfg, st.Items(stage.Entropy), st.Items(stage.Network), st.Duration(stage.Network), m*n)
		}
	}

	// A cancelled context stops the decode with the context's error.
	c, err := loadDir(dir, WithBatch(1), WithDecoderOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := c.DecodeMatrix(cctx, []int64{m, n}, payload); err == nil {
		t.Fatal("decode with a cancelled context succeeded")
	}
	// Truncated and extended payloads are corrupt, not a panic.
	for _, p := range [][]byte{payload[:len(payload)-1], append(append([]byte{}, payload...), 0), payload[:10]} {
		if _, err := c.DecodeMatrix(ctx, []int64{m, n}, p); err == nil {
			t.Fatalf("a %d-byte payload (valid: %d) decoded", len(p), len(payload))
		}
	}
}

// TestUniformLevels: with codec.Config.UniformLevels every column of a
// tensor is coded at level 0 although H ranks them; without it the same H
// gives the top columns higher levels. Both decode.
func TestUniformLevels(t *testing.T) {
	const m, n = 48, 37
	w, h := gaussianWithDiagH(m, n, 5)
	for _, uniform := range []bool{false, true} {
		out := encodeTiny(t, codec.Config{UniformLevels: uniform}, w, h, m, n)
		hd, err := parseHeader([]int64{m, n}, out.Payload)
		if err != nil {
			t.Fatal(err)
		}
		nonzero := 0
		for _, l := range hd.levels {
			if l != 0 {
				nonzero++
			}
		}
		if uniform && nonzero != 0 {
			t.Errorf("uniform levels: %d columns above level 0", nonzero)
		}
		if !uniform && nonzero == 0 {
			t.Error("importance levels: every column at level 0")
		}
	}
}

// TestTuneRowScales: with codec.Config.TuneRowScales the payload differs
// only in its row scales (same levels and latents), decodes, and its
// H-weighted error is below the untuned one.
func TestTuneRowScales(t *testing.T) {
	const m, n = 48, 37
	w, h := gaussianWithDiagH(m, n, 7)
	env := codec.Env{Codecs: os.DirFS("testdata")}
	dec, err := newDecoder(env)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.(interface{ Close() error }).Close()
	var payloads [2][]byte
	var loss [2]float64
	for k, tune := range []bool{false, true} {
		out := encodeTiny(t, codec.Config{TuneRowScales: tune}, w, h, m, n)
		raw, err := dec.Decode(context.Background(), codec.Section{Name: "w", DType: tensor.F32, Shape: []int64{m, n}, RawSize: 4 * m * n, Params: out.Params}, out.Payload, nil)
		if err != nil {
			t.Fatal(err)
		}
		what, err := tensor.ToFloat32(tensor.F32, raw, m*n, nil)
		if err != nil {
			t.Fatal(err)
		}
		if loss[k], err = ldlq.ProxyLoss(w, what, m, n, h); err != nil {
			t.Fatal(err)
		}
		payloads[k] = out.Payload
	}
	t.Logf("proxy loss %.5g -> %.5g", loss[0], loss[1])
	if !(loss[1] < loss[0]) {
		t.Errorf("tuned loss %g not below %g", loss[1], loss[0])
	}
	a, b := payloads[0], payloads[1]
	if len(a) != len(b) || string(a[1+2*m:]) != string(b[1+2*m:]) || string(a[1:1+2*m]) == string(b[1:1+2*m]) {
		t.Error("tuning should change the row scales and nothing else")
	}
}

// gaussianWithDiagH returns an m x n matrix of standard normal weights and
// an n x n diagonal H with entries in 1..1000 (columns of very different
// importance), from seed.
func gaussianWithDiagH(m, n int, seed uint64) ([]float32, []float64) {
	rng := rand.New(rand.NewPCG(seed, seed+1))
	w := make([]float32, m*n)
	for i := range w {
		w[i] = float32(rng.NormFloat64())
	}
	h := make([]float64, n*n)
	for j := 0; j < n; j++ {
		h[j*n+j] = float64(1 + rng.IntN(1000))
	}
	return w, h
}

// encodeTiny codes the m x n matrix w with calibration h through the nwc
// encoder of testdata/tinycodec, with cfg's options.
func encodeTiny(t *testing.T, cfg codec.Config, w []float32, h []float64, m, n int) codec.Output {
	t.Helper()
	cfg.Env, cfg.Arg = codec.Env{Codecs: os.DirFS("testdata")}, "tinycodec"
	enc, err := newEncoder(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.(interface{ Close() error }).Close()
	out, err := enc.Encode(context.Background(), codec.Input{Info: tensor.Info{Name: "w", DType: tensor.F32, Shape: []int64{int64(m), int64(n)}}, Weights: w, H: h})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
