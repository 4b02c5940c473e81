package lossless

import (
	"bytes"
	"context"
	"encoding/binary"
	"math"
	"math/rand"
	"testing"

	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/stage"
	"github.com/nwc-project/nwc/loader/tensor"
)

func gaussianF32(n int, seed int64) []byte {
	rng := rand.New(rand.NewSource(seed))
	b := make([]byte, 4*n)
	for i := 0; i < n; i++ {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(float32(rng.NormFloat64()*0.02)))
	}
	// special values
	specials := []uint32{0, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00001, 1, 0x807fffff}
	for i, s := range specials {
		binary.LittleEndian.PutUint32(b[4*i:], s)
	}
	return b
}

func to16(f32 []byte, conv func(float32) uint16) []byte {
	n := len(f32) / 4
	b := make([]byte, 2*n)
	for i := 0; i < n; i++ {
		binary.LittleEndian.PutUint16(b[2*i:], conv(math.Float32frombits(binary.LittleEndian.Uint32(f32[4*i:]))))
	}
	return b
}

func TestLosslessRoundTrip(t *testing.T) {
	l, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	f32 := gaussianF32(100000, 1)
	q := make([]byte, 20*1000) // Q4_1 blocks: compressible pattern
	for i := range q {
		q[i] = byte(i % 7)
	}
	cases := []struct {
		dt     tensor.DType
		raw    []byte
		wantID uint8
	}{
		{tensor.F32, f32, IDFloatSplit},
		{tensor.BF16, to16(f32, tensor.F32ToBF16), IDFloatSplit},
		{tensor.F16, to16(f32, tensor.F32ToF16), IDFloatSplit},
		{tensor.Q4_1, q, IDZstd},
		{tensor.F32, nil, IDRaw},
	}
	for _, c := range cases {
		id, params, payload, err := l.EncodeBytes(c.dt, c.raw)
		if err != nil {
			t.Fatal(err)
		}
		if id != c.wantID {
			t.Errorf("%s: codec %s, want %s", c.dt, codec.Name(id), codec.Name(c.wantID))
		}
		got, err := l.DecodeBytes(id, c.dt, int64(len(c.raw)), params, payload, nil)
		if err != nil {
			t.Fatalf("%s: %v", c.dt, err)
		}
		if !bytes.Equal(got, c.raw) {
			t.Fatalf("%s: round trip differs", c.dt)
		}
		if len(c.raw) > 0 {
			t.Logf("%s: %.2f bits/element", c.dt, 8*float64(len(payload))*c.dt.BitsPerElement()/float64(8*len(c.raw)))
		}
	}
	// fp32 Gaussian weights: the exponent plane must compress well below 8 bits
	_, _, p, _ := l.EncodeBytes(tensor.F32, f32)
	if bits := 8 * float64(len(p)) / 100000; bits > 28 {
		t.Errorf("float-split F32 at %.2f bits/weight, want < 28", bits)
	}
}

func TestLosslessCorrupt(t *testing.T) {
	l, _ := New()
	defer l.Close()
	f32 := gaussianF32(5000, 2)
	id, params, payload, _ := l.EncodeBytes(tensor.F32, f32)
	for pos := 0; pos < len(payload); pos += 97 {
		c := append([]byte(nil), payload...)
		c[pos] ^= 0x55
		got, err := l.DecodeBytes(id, tensor.F32, int64(len(f32)), params, c, nil)
		if err == nil && !bytes.Equal(got, f32) {
			// zstd frames carry a checksum; a silent wrong answer is a bug
			t.Fatalf("corruption at %d gave wrong data without error", pos)
		}
	}
	if _, err := l.DecodeBytes(id, tensor.F32, int64(len(f32))+4, params, payload, nil); err == nil {
		t.Error("wrong raw size accepted")
	}
	if _, err := l.DecodeBytes(99, tensor.F32, 4, nil, payload, nil); err == nil {
		t.Error("unknown codec accepted")
	}
}

func FuzzLosslessDecode(f *testing.F) {
	l, _ := New()
	defer l.Close()
	for _, dt := range []tensor.DType{tensor.F32, tensor.BF16, tensor.Q8_0} {
		raw := gaussianF32(68, 3)[:272]
		id, _, p, _ := l.EncodeBytes(dt, raw)
		f.Add(id, uint8(dt), int64(len(raw)), p)
	}
	f.Fuzz(func(t *testing.T, id, dt uint8, n int64, payload []byte) {
		if n < 0 || n > 1<<20 {
			return
		}
		l.DecodeBytes(id, tensor.DType(dt), n, nil, payload, nil)
	})
}

// TestDecodeStages: each lossless id counts the elements it decodes in its
// stages (zstd: entropy; raw copy: rescale; float-split: both).
func TestDecodeStages(t *testing.T) {
	raw := gaussianF32(1000, 9)
	l, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	zs := l.enc.EncodeAll(raw, nil)
	split := l.encodeSplit(tensor.F32, raw)
	for _, c := range []struct {
		id                uint8
		payload           []byte
		entropy, rescaled int64
	}{{IDRaw, raw, 0, 1000}, {IDZstd, zs, 1000, 0}, {IDFloatSplit, split, 1000, 1000}} {
		d, err := newDecoder(c.id)
		if err != nil {
			t.Fatal(err)
		}
		var st stage.Times
		got, err := d.Decode(stage.With(context.Background(), &st), codec.Section{DType: tensor.F32, Shape: []int64{10, 100}, RawSize: 4000}, c.payload, nil)
		if err != nil || !bytes.Equal(got, raw) {
			t.Fatalf("id %d: %v", c.id, err)
		}
		if st.Items(stage.Entropy) != c.entropy || st.Items(stage.Rescale) != c.rescaled {
			t.Errorf("id %d: stage items %d, %d", c.id, st.Items(stage.Entropy), st.Items(stage.Rescale))
		}
		d.(idDecoder).Close()
	}
}
