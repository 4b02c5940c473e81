package plugin_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/nwc-project/nwc/internal/tensortest"
	"github.com/nwc-project/nwc/loader"
	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/plugin"
)

var update = flag.Bool("update", false, "rewrite testdata/tiny-*.nwc")

// tinySource is a small synthetic model: two block linears (coded by the
// lossy codec), an embedding and a norm (kept losslessly).
func tinySource() *tensortest.MemSource {
	r := rand.New(rand.NewPCG(1, 2))
	randn := func(n int, s float64) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(r.NormFloat64() * s)
		}
		return v
	}
	src := &tensortest.MemSource{}
	src.Add("token_embd.weight", randn(32*64, 0.05), 32, 64)
	src.Add("blk.0.attn_q.weight", randn(64*64, 0.02), 64, 64)
	src.Add("blk.0.ffn_up.weight", randn(128*64, 0.02), 128, 64)
	src.Add("output_norm.weight", randn(64, 1), 64)
	return src
}

// TestUpdateTiny regenerates the committed test files (go test -run
// TestUpdateTiny -update): the same tiny model coded with the shipped
// neural codec and with rtn-g128.
func TestUpdateTiny(t *testing.T) {
	if !*update {
		t.Skip("run with -update to rewrite testdata")
	}
	for _, c := range []struct{ file, codec string }{{"tiny-nwc.nwc", "nwc:nwc-w128d2-l300"}, {"tiny-rtn.nwc", "rtn-g128"}, {tinyGain, "nwc:nwc-gain-l300"}} {
		if _, err := loader.Compress(context.Background(), tinySource(), filepath.Join("testdata", c.file),
			loader.CompressOptions{Codec: c.codec, Bits: 4}); err != nil {
			t.Fatal(err)
		}
	}
	// The digest of the gain-coded file as this (cgo) build decodes it: the
	// build without cgo must decode the same bytes (TestGainDecodesAnyBuild).
	sum, err := decodedDigest(filepath.Join("testdata", tinyGain))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join("testdata", tinyGain+".sha256"), []byte(sum+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func f32s(b []byte) []float32 {
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out
}

func TestOpenThreeWays(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join("testdata", "tiny-rtn.nwc")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var models []*plugin.Model
	m1, err := plugin.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := plugin.OpenReaderAt(ctx, bytes.NewReader(data), int64(len(data)), plugin.WithName("tiny"))
	if err != nil {
		t.Fatal(err)
	}
	m3, err := plugin.OpenFS(ctx, fstest.MapFS{"m/tiny.nwc": {Data: data}}, "m/tiny.nwc", plugin.WithPrefetch(0))
	if err != nil {
		t.Fatal(err)
	}
	models = append(models, m1, m2, m3)
	defer func() {
		for _, m := range models {
			if err := m.Close(); err != nil {
				t.Error(err)
			}
		}
	}()
	src := tinySource()
	for _, ti := range m1.Tensors() {
		var first []byte
		for i, m := range models {
			if m.Format() != "nwc" {
				t.Fatalf("format %q", m.Format())
			}
			b, err := m.ReadTensor(ctx, ti.Name, plugin.F32, nil)
			if err != nil {
				t.Fatal(err)
			}
			if i == 0 {
				first = b
			} else if !bytes.Equal(b, first) {
				t.Fatalf("%s: open %d decodes differently", ti.Name, i)
			}
		}
		want := src.Data[ti.Name]
		got := f32s(first)
		if len(got) != len(want) {
			t.Fatalf("%s: %d values, want %d", ti.Name, len(got), len(want))
		}
		var se, ss float64
		for i := range want {
			d := float64(got[i] - want[i])
			se += d * d
			ss += float64(want[i]) * float64(want[i])
		}
		lossy := ti.Name == "blk.0.attn_q.weight" || ti.Name == "blk.0.ffn_up.weight"
		if !lossy && se != 0 {
			t.Errorf("%s: kept losslessly but decodes with error %g", ti.Name, se)
		}
		if lossy && (se == 0 || se/ss > 0.02) {
			t.Errorf("%s: rtn-g128 4-bit relative error %g (want (0, 0.02])", ti.Name, se/ss)
		}
	}
}

func TestReadTensorDTypes(t *testing.T) {
	ctx := context.Background()
	m, err := plugin.Open(ctx, filepath.Join("testdata", "tiny-rtn.nwc"))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	name := "blk.0.ffn_up.weight"
	b32, err := m.ReadTensor(ctx, name, plugin.F32, nil)
	if err != nil {
		t.Fatal(err)
	}
	f := f32s(b32)
	b16, err := m.ReadTensor(ctx, name, plugin.F16, nil)
	if err != nil {
		t.Fatal(err)
	}
	bb, err := m.ReadTensor(ctx, name, plugin.BF16, make([]byte, 0, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	if len(b16) != 2*len(f) || len(bb) != 2*len(f) {
		t.Fatalf("lengths %d %d for %d values", len(b16), len(bb), len(f))
	}
	for i, v := range f {
		if h := binary.LittleEndian.Uint16(b16[2*i:]); h != tensor.F32ToF16(v) {
			t.Fatalf("f16[%d] = %#x, want %#x", i, h, tensor.F32ToF16(v))
		}
		if h := binary.LittleEndian.Uint16(bb[2*i:]); h != tensor.F32ToBF16(v) {
			t.Fatalf("bf16[%d] = %#x, want %#x", i, h, tensor.F32ToBF16(v))
		}
	}
	if _, err := m.ReadTensor(ctx, name, tensor.Q8_0, nil); !errors.Is(err, plugin.ErrUnsupported) {
		t.Errorf("read as Q8_0: %v", err)
	}
	if _, err := m.ReadTensor(ctx, "nope", plugin.F32, nil); !errors.Is(err, plugin.ErrNotFound) {
		t.Errorf("missing tensor: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := m.ReadTensor(cctx, name, plugin.F32, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled read: %v", err)
	}
}

func TestOptionsValidated(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join("testdata", "tiny-rtn.nwc")
	for name, opt := range map[string]plugin.Option{
		"threads":  plugin.WithThreads(-1),
		"sessions": plugin.WithDecodeSessions(300),
		"provider": plugin.WithProvider("tpu"),
		"prefetch": plugin.WithPrefetch(-2),
		"codecs":   plugin.WithCodecs(nil),
	} {
		if m, err := plugin.Open(ctx, path, opt); err == nil {
			m.Close()
			t.Errorf("%s: invalid option accepted", name)
		}
	}
}

func TestBadFiles(t *testing.T) {
	ctx := context.Background()
	data, err := os.ReadFile(filepath.Join("testdata", "tiny-rtn.nwc"))
	if err != nil {
		t.Fatal(err)
	}
	// A flipped byte in the last tensor section is a checksum error at read.
	m, err := plugin.Open(ctx, filepath.Join("testdata", "tiny-rtn.nwc"))
	if err != nil {
		t.Fatal(err)
	}
	last := m.Tensors()[len(m.Tensors())-1].Name
	m.Close()
	found := false
	for off := len(data) / 2; off < len(data) && !found; off++ {
		bad := bytes.Clone(data)
		bad[off] ^= 0x40
		mb, err := plugin.OpenReaderAt(ctx, bytes.NewReader(bad), int64(len(bad)), plugin.WithName("bad.nwc"), plugin.WithPrefetch(0))
		if err != nil {
			if !errors.Is(err, plugin.ErrCorrupt) {
				t.Fatalf("flip at %d: open: %v does not wrap ErrCorrupt", off, err)
			}
			continue
		}
		for _, ti := range mb.Tensors() {
			if _, err := mb.ReadTensor(ctx, ti.Name, plugin.F32, nil); err != nil {
				if !errors.Is(err, plugin.ErrChecksum) || !bytes.Contains([]byte(err.Error()), []byte("bad.nwc")) {
					t.Fatalf("flip at %d: %v: want a checksum error naming the file", off, err)
				}
				found = true
			}
		}
		mb.Close()
	}
	if !found {
		t.Fatalf("no flipped byte gave a checksum error at read (last tensor %s)", last)
	}
	if _, err := plugin.OpenReaderAt(ctx, bytes.NewReader(data[:100]), 100); !errors.Is(err, plugin.ErrCorrupt) {
		t.Errorf("truncated: %v", err)
	}
	if _, err := plugin.OpenReaderAt(ctx, bytes.NewReader([]byte("not a model at all")), 18); !errors.Is(err, plugin.ErrUnsupported) {
		t.Errorf("junk: %v", err)
	}
}

// TestCloseDuringReads: Close waits for reads in flight, reads after it fail
// with ErrClosed (no panic on the released file), and Close is idempotent.
func TestCloseDuringReads(t *testing.T) {
	ctx := context.Background()
	m, err := plugin.Open(ctx, filepath.Join("testdata", "tiny-rtn.nwc"))
	if err != nil {
		t.Fatal(err)
	}
	names := m.Tensors()
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				_, err := m.ReadTensor(ctx, names[i%len(names)].Name, plugin.F32, nil)
				if err != nil && !errors.Is(err, plugin.ErrClosed) {
					t.Errorf("read: %v", err)
					return
				}
			}
		}()
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if _, err := m.ReadTensor(ctx, names[0].Name, plugin.F32, nil); !errors.Is(err, plugin.ErrClosed) {
		t.Fatalf("read after Close: %v, want ErrClosed", err)
	}
	if _, err := m.Config(); !errors.Is(err, plugin.ErrClosed) {
		t.Fatalf("Config after Close: %v, want ErrClosed", err)
	}
	if len(m.Tensors()) != len(names) {
		t.Fatal("Tensors after Close changed")
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
