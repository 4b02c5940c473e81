package loader

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nwc-project/nwc/internal/ortenv/orttest"
	"github.com/nwc-project/nwc/internal/tensortest"
	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/container"
	"github.com/nwc-project/nwc/loader/safetensors"
	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/ortcodec/ldlq"
)

// memSource is a small in-memory tensor.Source for tests.
type memSource struct {
	infos  []tensor.Info
	data   map[string][]byte
	assets []tensor.Asset
}

func (m *memSource) Tensors() []tensor.Info { return m.infos }
func (m *memSource) Assets() []tensor.Asset { return m.assets }
func (m *memSource) ReadRaw(name string, dst []byte) ([]byte, error) {
	return append(dst[:0], m.data[name]...), nil
}
func (m *memSource) ReadFloat32(name string, dst []float32) ([]float32, error) {
	ti, _ := tensor.Find(m.infos, name)
	return tensor.ToFloat32(ti.DType, m.data[name], ti.NumElements(), dst)
}
func (m *memSource) Close() error { return nil }

func (m *memSource) add(name string, dt tensor.DType, shape []int64, raw []byte) {
	m.infos = append(m.infos, tensor.Info{Name: name, DType: dt, Shape: shape, Size: int64(len(raw))})
	if m.data == nil {
		m.data = map[string][]byte{}
	}
	m.data[name] = raw
}

func testSource() *memSource {
	rng := rand.New(rand.NewSource(7))
	m := &memSource{assets: []tensor.Asset{{Name: "config.json", Data: []byte(`{"hidden_size": 8}`)}}}
	f32 := make([]byte, 4*64*48)
	for i := 0; i < len(f32)/4; i++ {
		binary.LittleEndian.PutUint32(f32[4*i:], math.Float32bits(float32(rng.NormFloat64())))
	}
	m.add("layer.0.weight", tensor.F32, []int64{64, 48}, f32)
	bf := make([]byte, 2*256)
	for i := range bf {
		bf[i] = byte(rng.Intn(256))
	}
	m.add("layer.0.bias", tensor.BF16, []int64{256}, bf)
	m.add("ids", tensor.I64, []int64{3}, []byte{1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0})
	return m
}

func TestCompressDecompressRoundTrip(t *testing.T) {
	dir := t.TempDir()
	src := testSource()
	out := filepath.Join(dir, "m.nwc")
	sum, err := Compress(context.Background(), src, out, CompressOptions{Codec: "lossless", Concurrency: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Tensors) != 3 || sum.FileBytes == 0 {
		t.Fatalf("summary: %+v", sum)
	}
	nf, err := OpenNWC(out, codec.Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer nf.Close()
	if err := nf.Container().Verify(); err != nil {
		t.Fatal(err)
	}
	for _, ti := range src.Tensors() {
		got, err := nf.ReadRaw(ti.Name, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, src.data[ti.Name]) {
			t.Errorf("%s differs after round trip", ti.Name)
		}
	}
	if len(nf.Assets()) != 1 || string(nf.Assets()[0].Data) != `{"hidden_size": 8}` {
		t.Errorf("assets: %+v", nf.Assets())
	}
	st := filepath.Join(dir, "m.safetensors")
	if err := Decompress(context.Background(), nf, st, DecompressOptions{}); err != nil {
		t.Fatal(err)
	}
	back, err := safetensors.Open(st)
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	for _, ti := range src.Tensors() {
		got, err := back.ReadRaw(ti.Name, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, src.data[ti.Name]) {
			t.Errorf("%s differs after decompress", ti.Name)
		}
	}
	if b, err := os.ReadFile(st + ".config.json"); err != nil || string(b) != `{"hidden_size": 8}` {
		t.Errorf("asset beside output: %q %v", b, err)
	}
	// Decoding twice gives identical bytes.
	st2 := filepath.Join(dir, "m2.safetensors")
	if err := Decompress(context.Background(), nf, st2, DecompressOptions{}); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(st)
	b, _ := os.ReadFile(st2)
	if !bytes.Equal(a, b) {
		t.Error("two decompressions differ")
	}
}

// A corrupted byte inside a tensor's section gives an error naming the tensor.
func TestCorruptSectionNamesTensor(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "m.nwc")
	if _, err := Compress(context.Background(), testSource(), out, CompressOptions{Codec: "lossless"}); err != nil {
		t.Fatal(err)
	}
	r, err := container.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	e, _ := r.Lookup(container.KindTensor, "layer.0.weight")
	r.Close()
	data, _ := os.ReadFile(out)
	data[e.PayloadOffset+e.PayloadSize/2] ^= 0x10
	bad := filepath.Join(dir, "bad.nwc")
	os.WriteFile(bad, data, 0o644)
	nf, err := OpenNWC(bad, codec.Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer nf.Close()
	_, err = nf.ReadRaw("layer.0.weight", nil)
	if !errors.Is(err, container.ErrChecksum) || !strings.Contains(err.Error(), `"layer.0.weight"`) || !strings.Contains(err.Error(), "bad.nwc") {
		t.Fatalf("want checksum error naming file and tensor, got %v", err)
	}
	if _, err := nf.ReadRaw("layer.0.bias", nil); err != nil {
		t.Fatalf("intact tensor unreadable: %v", err)
	}
}

func TestCompressCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	dir := t.TempDir()
	if _, err := Compress(ctx, testSource(), filepath.Join(dir, "c.nwc"), CompressOptions{Codec: "lossless"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled compress: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("cancelled compress left files: %v", ents)
	}
}

func TestDetect(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.bin")
	os.WriteFile(junk, []byte("hello world"), 0o644)
	if _, _, err := Open(junk, codec.Env{}); err == nil || !strings.Contains(err.Error(), "junk.bin") {
		t.Fatalf("junk file: %v", err)
	}
	if _, _, err := Open("no-such-model", codec.Env{}); err == nil {
		t.Fatal("unknown name accepted")
	}
}

// The real fp32 model round-trips bit for bit through the lossless codec.
func TestMiniLMLossless(t *testing.T) {
	tensortest.RequireModel(t, "minilm-l6")
	src, _, err := Open("minilm-l6", codec.Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dir := t.TempDir()
	out := filepath.Join(dir, "minilm.nwc")
	sum, err := Compress(context.Background(), src, out, CompressOptions{Codec: "lossless"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("minilm-l6: %d tensors, %d weights, %.3f bits/weight (file)", len(sum.Tensors), sum.Weights, sum.BitsPerWeight)
	if sum.BitsPerWeight >= 32 {
		t.Errorf("lossless fp32 at %.3f bits/weight, want < 32", sum.BitsPerWeight)
	}
	st := filepath.Join(dir, "minilm.safetensors")
	nf, err := OpenNWC(out, codec.Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer nf.Close()
	if err := Decompress(context.Background(), nf, st, DecompressOptions{}); err != nil {
		t.Fatal(err)
	}
	back, err := safetensors.Open(st)
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	if len(back.Tensors()) != len(src.Tensors()) {
		t.Fatalf("%d tensors back, want %d", len(back.Tensors()), len(src.Tensors()))
	}
	for _, ti := range src.Tensors() {
		want, err := src.ReadRaw(ti.Name, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := back.ReadRaw(ti.Name, nil)
		if err != nil {
			t.Fatal(err)
		}
		bi, _ := tensor.Find(back.Tensors(), ti.Name)
		if !bytes.Equal(got, want) || bi.DType != ti.DType {
			t.Fatalf("%s not bit-identical", ti.Name)
		}
	}
}

func TestLossyCodecs(t *testing.T) {
	dir := t.TempDir()
	src := testSource()
	w, _ := src.ReadFloat32("layer.0.weight", nil)
	for _, c := range []struct {
		name string
		bits float64
	}{{"rtn-g128", 4}, {"rtn-row", 3}, {"gptq-g128", 4}, {"ecsq", 3.5}} {
		out := filepath.Join(dir, c.name+".nwc")
		if _, err := Compress(context.Background(), src, out, CompressOptions{Codec: c.name, Bits: c.bits}); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		nf, err := OpenNWC(out, codec.Env{})
		if err != nil {
			t.Fatal(err)
		}
		got, err := nf.ReadFloat32("layer.0.weight", nil)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		again, _ := nf.ReadFloat32("layer.0.weight", nil)
		var mse, pow float64
		for i := range w {
			d := float64(got[i] - w[i])
			mse += d * d
			pow += float64(w[i]) * float64(w[i])
			if got[i] != again[i] {
				t.Fatalf("%s: two decodes differ", c.name)
			}
		}
		if snr := 10 * math.Log10(pow/mse); snr < 10 {
			t.Errorf("%s at %g bits: SNR %.1f dB", c.name, c.bits, snr)
		}
		// The other tensors stay exact.
		for _, name := range []string{"layer.0.bias", "ids"} {
			raw, err := nf.ReadRaw(name, nil)
			if err != nil || !bytes.Equal(raw, src.data[name]) {
				t.Errorf("%s: %s not kept exactly (%v)", c.name, name, err)
			}
		}
		e, _ := nf.Container().Lookup(container.KindTensor, "layer.0.weight")
		t.Logf("%s %g: %.3f bits/weight", c.name, c.bits, 8*float64(e.SectionSize())/float64(len(w)))
		nf.Close()
	}
	if _, err := Compress(context.Background(), src, filepath.Join(dir, "x.nwc"), CompressOptions{Codec: "rtn-g128", Bits: 2.5}); err == nil {
		t.Error("fractional bits accepted for rtn")
	}
}

// The neural codec path, with the tiny (random, untrained) test codec of
// ortcodec: what the file decodes to must be exactly what the encoder's
// reconstruction was, the same twice, and a missing codec a clear error.
func TestNeuralCodecTiny(t *testing.T) {
	orttest.Require(t)
	dir := t.TempDir()
	codecDir, _ := filepath.Abs("../ortcodec/testdata/tinycodec")
	src := testSource()
	out := filepath.Join(dir, "n.nwc")
	h := func(name string, n int) ([]float64, error) {
		H := make([]float64, n*n)
		for i := 0; i < n; i++ {
			H[i*n+i] = float64(1 + i%7)
			if i > 0 {
				H[i*n+i-1], H[(i-1)*n+i] = 0.3, 0.3
			}
		}
		return H, nil
	}
	if _, err := Compress(context.Background(), src, out, CompressOptions{Codec: "nwc:" + codecDir, Hessian: h}); err != nil {
		t.Fatal(err)
	}
	nf, err := OpenNWC(out, codec.Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer nf.Close()
	t.Setenv("NWC_CODECS", filepath.Dir(codecDir))
	a, err := nf.ReadFloat32("layer.0.weight", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := nf.ReadFloat32("layer.0.weight", nil)
	for i := range a {
		if a[i] != b[i] || math.IsNaN(float64(a[i])) {
			t.Fatal("decodes differ or NaN")
		}
	}
	e, _ := nf.Container().Lookup(container.KindTensor, "layer.0.weight")
	if e.Codec != codec.IDNWC {
		t.Fatalf("codec %d", e.Codec)
	}
	// Without the codec on the search path: a clear error naming the tensor.
	nf2, _ := OpenNWC(out, codec.Env{})
	defer nf2.Close()
	t.Setenv("NWC_CODECS", t.TempDir())
	if _, err := nf2.ReadFloat32("layer.0.weight", nil); err == nil || !strings.Contains(err.Error(), "tinycodec") || !strings.Contains(err.Error(), "layer.0.weight") {
		t.Fatalf("missing codec: %v", err)
	}
}

// FeedbackBlock reaches the LDLQ feedback of ecsq: with a correlated H and
// 48 columns, block 128 means no feedback at all, block 8 feeds back and
// lowers the proxy loss at the same rate.
func TestFeedbackBlock(t *testing.T) {
	dir := t.TempDir()
	src := testSource()
	w, _ := src.ReadFloat32("layer.0.weight", nil)
	const n = 48
	rng := rand.New(rand.NewSource(3))
	x := make([]float64, 200*n) // correlated inputs: rank 6 + noise
	basis := make([]float64, 6*n)
	for i := range basis {
		basis[i] = rng.NormFloat64()
	}
	for r := 0; r < 200; r++ {
		g := make([]float64, 6)
		for i := range g {
			g[i] = rng.NormFloat64()
		}
		for c := 0; c < n; c++ {
			v := 0.1 * rng.NormFloat64()
			for i := range g {
				v += g[i] * basis[i*n+c]
			}
			x[r*n+c] = v
		}
	}
	H := make([]float64, n*n)
	for r := 0; r < 200; r++ {
		for a := 0; a < n; a++ {
			for b := 0; b < n; b++ {
				H[a*n+b] += x[r*n+a] * x[r*n+b]
			}
		}
	}
	hf := func(name string, cols int) ([]float64, error) { return H, nil }
	loss := map[int]float64{}
	for _, block := range []int{128, 8} {
		out := filepath.Join(dir, fmt.Sprintf("b%d.nwc", block))
		if _, err := Compress(context.Background(), src, out, CompressOptions{Codec: "ecsq", Bits: 3, Hessian: hf, FeedbackBlock: block}); err != nil {
			t.Fatal(err)
		}
		nf, err := OpenNWC(out, codec.Env{})
		if err != nil {
			t.Fatal(err)
		}
		got, err := nf.ReadFloat32("layer.0.weight", nil)
		nf.Close()
		if err != nil {
			t.Fatal(err)
		}
		if loss[block], err = ldlq.ProxyLoss(w, got, 64, n, H); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("proxy loss: block 128 %.4g, block 8 %.4g", loss[128], loss[8])
	if !(loss[8] < 0.8*loss[128]) {
		t.Fatalf("feedback block 8 does not help: %g vs %g", loss[8], loss[128])
	}
	if _, err := Compress(context.Background(), src, filepath.Join(dir, "bad.nwc"), CompressOptions{Codec: "ecsq", Bits: 3, FeedbackBlock: -1}); err == nil {
		t.Fatal("negative feedback block accepted")
	}
}
