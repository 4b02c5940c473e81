package rtn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"strings"
	"testing"

	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/stage"
	"github.com/nwc-project/nwc/loader/tensor"
)

func TestRTN(t *testing.T) {
	rows, cols := 7, 300
	w := gaussian(rows*cols, 3)
	prevErr := math.Inf(1)
	for bits := 2; bits <= 8; bits++ {
		for _, g := range []int{0, 128} {
			q := Quantizer{Bits: bits, Group: g}
			payload := q.EncodeMatrix(w, rows, cols)
			if int64(len(payload)) != q.PayloadSize(rows, cols) {
				t.Fatalf("payload size %d, want %d", len(payload), q.PayloadSize(rows, cols))
			}
			raw, err := Decode([]int64{int64(rows), int64(cols)}, q.Params(), payload, nil)
			if err != nil {
				t.Fatal(err)
			}
			var mse float64
			for i := range w {
				d := float64(math.Float32frombits(uint32(raw[4*i])|uint32(raw[4*i+1])<<8|uint32(raw[4*i+2])<<16|uint32(raw[4*i+3])<<24)) - float64(w[i])
				mse += d * d
			}
			mse /= float64(len(w))
			// Uniform quantization: error at most about step^2/12 with step = range/(2^b-1).
			step := 8.0 / float64(int(1)<<bits-1)
			if mse > step*step/4 {
				t.Errorf("bits %d group %d: mse %g too large (step %g)", bits, g, mse, step)
			}
			if g == 128 {
				if mse > prevErr {
					t.Errorf("bits %d: error %g did not fall from %g", bits, mse, prevErr)
				}
				prevErr = mse
			}
			// Quantize gives the same values as Encode+Decode.
			qv := q.Quantize(w, rows, cols, nil)
			back, _ := q.decode(payload, rows, cols, nil)
			for i := range qv {
				if qv[i] != back[i] {
					t.Fatal("Quantize differs from decode")
				}
			}
		}
	}
	// Constant rows (zero range) survive.
	z := make([]float32, 256)
	q := Quantizer{Bits: 4, Group: 128}
	out := q.Quantize(z, 2, 128, nil)
	for _, v := range out {
		if v != 0 {
			t.Fatal("zero row not reproduced")
		}
	}
}

func TestRTNCorrupt(t *testing.T) {
	if _, err := Decode([]int64{2, 4}, []byte{9, 0}, make([]byte, 100), nil); err == nil {
		t.Error("bits 9 accepted")
	}
	if _, err := Decode([]int64{2, 4}, Quantizer{Bits: 4}.Params(), make([]byte, 3), nil); err == nil {
		t.Error("short payload accepted")
	}
}

func FuzzRTNDecode(f *testing.F) {
	f.Add(int64(3), int64(5), []byte{4, 0}, make([]byte, 20))
	f.Add(int64(3), int64(5), []byte{4, 0, 2}, make([]byte, 17))
	f.Add(int64(2), int64(70), []byte{3, 32, 2}, make([]byte, 66))
	f.Fuzz(func(t *testing.T, r, c int64, params, payload []byte) {
		if r < 0 || c < 0 || r*c > 1<<20 {
			return
		}
		Decode([]int64{r, c}, params, payload, nil)
	})
}

// TestDecodeStages: the decoder's two passes (unpack, dequantize into the
// output) give exactly the values of the one-pass decode, and count every
// weight in stage.Entropy and stage.Rescale.
func TestDecodeStages(t *testing.T) {
	rows, cols := 5, 131
	w := gaussian(rows*cols, 5)
	shape := []int64{int64(rows), int64(cols)}
	for bits := 1; bits <= 8; bits++ {
		for _, g := range []int{0, 64, 128} {
			q := Quantizer{Bits: bits, Group: g}
			payload := q.EncodeMatrix(w, rows, cols)
			f, err := q.decode(payload, rows, cols, nil)
			if err != nil {
				t.Fatal(err)
			}
			var st stage.Times
			ctx := stage.With(context.Background(), &st)
			got, err := decoder{}.Decode(ctx, codec.Section{DType: tensor.F32, Shape: shape, RawSize: int64(4 * rows * cols), Params: q.Params()}, payload, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tensor.F32Bytes(f, nil)) {
				t.Fatalf("bits %d group %d: two-pass decode differs", bits, g)
			}
			if st.Items(stage.Entropy) != int64(rows*cols) || st.Items(stage.Rescale) != int64(rows*cols) {
				t.Errorf("bits %d group %d: stage items %d, %d", bits, g, st.Items(stage.Entropy), st.Items(stage.Rescale))
			}
		}
	}
}

// TestVersions: version 2 (packed zero points) decodes to exactly the
// values of version 1 (fp16 zero points), its payload has the size of the
// accounting formula, and a version this build does not know is
// ErrUnsupported, naming it.
func TestVersions(t *testing.T) {
	rows, cols := 6, 200
	w := gaussian(rows*cols, 9)
	shape := []int64{int64(rows), int64(cols)}
	for bits := 1; bits <= 8; bits++ {
		for _, g := range []int{0, 32, 64, 128} {
			v1 := Quantizer{Bits: bits, Group: g, Version: V1}
			v2 := Quantizer{Bits: bits, Group: g}
			p1, p2 := v1.EncodeMatrix(w, rows, cols), v2.EncodeMatrix(w, rows, cols)
			groups := int64(rows) * int64(v2.numGroups(cols))
			if want := 4*groups + (int64(rows*cols*bits)+7)/8; int64(len(p1)) != want {
				t.Fatalf("v1 payload %d bytes, want %d", len(p1), want)
			}
			if want := 2*groups + (groups*int64(bits)+7)/8 + (int64(rows*cols*bits)+7)/8; int64(len(p2)) != want {
				t.Fatalf("v2 payload %d bytes, want %d", len(p2), want)
			}
			if p1, p2 := v1.Params(), v2.Params(); len(p2) != len(p1)+1 || !bytes.Equal(p1, p2[:len(p1)]) || p2[len(p1)] != V2 {
				t.Fatalf("params %x, %x", v1.Params(), v2.Params())
			}
			d1, err := Decode(shape, v1.Params(), p1, nil)
			if err != nil {
				t.Fatal(err)
			}
			d2, err := Decode(shape, v2.Params(), p2, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(d1, d2) {
				t.Fatalf("bits %d group %d: v1 and v2 decode differently", bits, g)
			}
		}
	}
	for _, v := range []byte{0, 1, 3, 255} {
		p := append(Quantizer{Bits: 4, Group: 128, Version: V1}.Params(), v)
		_, err := ParseParams(p)
		if !errors.Is(err, codec.ErrUnsupported) || !strings.Contains(err.Error(), fmt.Sprintf("version %d", v)) {
			t.Errorf("version %d: %v", v, err)
		}
	}
	if _, err := ParseParams([]byte{4, 128, 1, 2, 0}); !errors.Is(err, codec.ErrCorrupt) {
		t.Errorf("trailing byte: %v", err)
	}
	if _, err := Pack(Quantizer{Bits: 2}, 1, 4, []uint16{0}, []uint8{4}, make([]uint8, 4)); err == nil {
		t.Error("zero point 4 packed in 2 bits")
	}
}

// gaussian returns n seeded standard normal values.
func gaussian(n int, seed int64) []float32 {
	rng := rand.New(rand.NewSource(seed))
	w := make([]float32, n)
	for i := range w {
		w[i] = float32(rng.NormFloat64())
	}
	return w
}
