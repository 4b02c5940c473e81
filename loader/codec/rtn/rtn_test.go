package rtn

import (
	"math"
	"math/rand"
	"testing"
)

func TestRTN(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	rows, cols := 7, 300
	w := make([]float32, rows*cols)
	for i := range w {
		w[i] = float32(rng.NormFloat64())
	}
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
	f.Fuzz(func(t *testing.T, r, c int64, params, payload []byte) {
		if r < 0 || c < 0 || r*c > 1<<20 {
			return
		}
		Decode([]int64{r, c}, params, payload, nil)
	})
}
