package rtn_test

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"

	"github.com/nwc-project/nwc/internal/tensortest"
	"github.com/nwc-project/nwc/loader"
	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/codec/rtn"
	"github.com/nwc-project/nwc/loader/container"
	"github.com/nwc-project/nwc/loader/tensor"
)

// TestRateRealModel measures the rate of packed zero points on a real
// model (minilm-l6, 4 bits, groups of 128), from the bytes of the file
// rtn-g128 writes: every block-linear section is version 2 with the payload
// size of the accounting formula 2P + ceil(P*b/8) + ceil(R*C*b/8) (P = R x
// groups), and the same sections in version 1 (4P + ceil(R*C*b/8), one
// parameter byte less) would cost 3/32 bit/weight more. One real tensor is
// also coded in both versions: the sizes are the formula's and the decoded
// values are identical.
func TestRateRealModel(t *testing.T) {
	tensortest.RequireModel(t, "minilm-l6")
	src, _, err := loader.Open("minilm-l6", codec.Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	out := filepath.Join(t.TempDir(), "rtn.nwc")
	const bits = 4
	sum, err := loader.Compress(context.Background(), src, out, loader.CompressOptions{Codec: "rtn-g128", Bits: bits})
	if err != nil {
		t.Fatal(err)
	}
	r, err := container.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	q := rtn.Quantizer{Bits: bits, Group: 128}
	v1 := rtn.Quantizer{Bits: bits, Group: 128, Version: rtn.V1}
	var sections, v1Sections, n int64
	var real string
	for _, e := range r.Entries() {
		ti := e.Info()
		if e.Kind != container.KindTensor || !loader.IsBlockLinear(ti) {
			continue
		}
		rows, cols, err := codec.MatrixDims(ti.Shape)
		if err != nil {
			t.Fatal(err)
		}
		p := int64(rows) * int64((cols+127)/128)
		want := 2*p + (p*bits+7)/8 + (int64(rows)*int64(cols)*bits+7)/8
		if e.Codec != rtn.ID || !bytes.Equal(e.Params, q.Params()) || e.PayloadSize != want || q.PayloadSize(rows, cols) != want {
			t.Fatalf("%s: codec %d params %x payload %d bytes, want %d, %x, %d", ti.Name, e.Codec, e.Params, e.PayloadSize, rtn.ID, q.Params(), want)
		}
		sections += e.SectionSize()
		v1Sections += e.SectionSize() - want + 4*p + (int64(rows)*int64(cols)*bits+7)/8 - 1
		n += ti.NumElements()
		if real == "" && cols%128 == 0 {
			real = ti.Name
		}
	}
	bpw2, bpw1 := 8*float64(sections)/float64(n), 8*float64(v1Sections)/float64(n)
	t.Logf("minilm-l6 block linears, %d weights, 4-bit g128: %.4f bits/weight (v2, from the file), %.4f with v1 sections; whole file %.4f", n, bpw2, bpw1, sum.BitsPerWeight)
	if bpw2 != sum.LinearBitsPerWeight {
		t.Errorf("block-linear bits/weight %v, Compress reports %v", bpw2, sum.LinearBitsPerWeight)
	}
	// Every group is whole: the zero points save 16-4 bits per 128 weights.
	if d := bpw1 - bpw2; d < 12.0/128-1e-3 || d > 12.0/128+1e-3 {
		t.Errorf("v1 - v2 = %.5f bits/weight, want %.5f", d, 12.0/128)
	}

	w, err := src.ReadFloat32(real, nil)
	if err != nil {
		t.Fatal(err)
	}
	ti, _ := tensor.Find(src.Tensors(), real)
	info := ti.Shape
	rows, cols, _ := codec.MatrixDims(info)
	p1, p2 := v1.EncodeMatrix(w, rows, cols), q.EncodeMatrix(w, rows, cols)
	g := int64(rows) * int64(cols/128)
	if int64(len(p1)) != 4*g+int64(rows*cols*bits/8) || int64(len(p2)) != 2*g+g*bits/8+int64(rows*cols*bits/8) {
		t.Fatalf("%s: payloads %d (v1), %d (v2) bytes", real, len(p1), len(p2))
	}
	d1, err := rtn.Decode(info, v1.Params(), p1, nil)
	if err != nil {
		t.Fatal(err)
	}
	d2, err := rtn.Decode(info, q.Params(), p2, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(d1, d2) {
		t.Errorf("%s: v1 and v2 decode differently", real)
	}
	t.Logf("%s [%d, %d]: payload %.4f bits/weight v1, %.4f v2", real, rows, cols, 8*float64(len(p1))/float64(rows*cols), 8*float64(len(p2))/float64(rows*cols))
}
