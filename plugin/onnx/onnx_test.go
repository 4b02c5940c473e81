//go:build cgo

package onnx

import (
	"bytes"
	"encoding/binary"
	"math"
	"slices"
	"testing"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/nwc-project/nwc/internal/ortenv"
	"github.com/nwc-project/nwc/internal/ortenv/orttest"
	"github.com/nwc-project/nwc/loader/onnxinit"
	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/plugin/onnx/onnxpb"
)

// tinyModel: y = Relu(x @ W + b), x [batch, 3] dynamic batch, W [3, 2], b [2].
func tinyModel(t *testing.T, w, b []float32) []byte {
	g := NewGraph("tiny")
	x := g.Input("x", Float, P("batch"), D(3))
	W := g.InitFloat32("W", []int64{3, 2}, w)
	B := g.InitFloat32("b", []int64{2}, b)
	h := g.Op("Add", g.Op("MatMul", x, W), B)
	g.NodeOut("Relu", []string{h}, []string{"y"})
	g.Output("y", Float, P("batch"), D(2))
	data, err := g.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func run(t *testing.T, model []byte, x []float32) []float32 { return runIn(t, model, x, "") }

// runIn is run with external data read from dir ("": none).
func runIn(t *testing.T, model []byte, x []float32, dir string) []float32 {
	t.Helper()
	opts, err := ortenv.SessionOptions("cpu", 1)
	if err != nil {
		t.Fatal(err)
	}
	defer opts.Destroy()
	if dir != "" {
		if err := ortenv.SetExternalDataFolder(opts, dir); err != nil {
			t.Fatal(err)
		}
	}
	s, err := ort.NewDynamicAdvancedSessionWithONNXData(model, []string{"x"}, []string{"y"}, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Destroy()
	in, err := ort.NewTensor(ort.NewShape(int64(len(x)/3), 3), x)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Destroy()
	outs := []ort.Value{nil}
	if err := s.Run([]ort.Value{in}, outs); err != nil {
		t.Fatal(err)
	}
	defer outs[0].Destroy()
	return append([]float32(nil), outs[0].(*ort.Tensor[float32]).GetData()...)
}

func TestBuildRun(t *testing.T) {
	orttest.Require(t)
	w := []float32{1, -1, 2, 0.5, -3, 1}
	b := []float32{0.5, -0.25}
	model := tinyModel(t, w, b)
	x := []float32{1, 2, 3, -1, 0, 1}
	ref := func(w, b []float32) []float32 {
		var y []float32
		for r := 0; r < 2; r++ {
			for j := 0; j < 2; j++ {
				s := b[j]
				for k := 0; k < 3; k++ {
					s += x[3*r+k] * w[2*k+j]
				}
				y = append(y, max(s, 0))
			}
		}
		return y
	}
	check := func(got, want []float32) {
		t.Helper()
		for i := range want {
			if math.Abs(float64(got[i]-want[i])) > 1e-6 {
				t.Fatalf("got %v want %v", got, want)
			}
		}
	}
	check(run(t, model, x), ref(w, b))

}

func TestUnmarshalModelRejectsGarbage(t *testing.T) {
	if _, err := UnmarshalModel([]byte{0xff, 0xff}); err == nil {
		t.Fatal("garbage parsed")
	}
}

// The builder's models are read back by the repository's one ONNX
// initializer reader, loader/onnxinit, whose data-type numbers must agree
// with the generated onnx.proto enum.
func TestInitializersReadByOnnxinit(t *testing.T) {
	for _, c := range []struct {
		got  int
		want onnxpb.TensorProto_DataType
	}{
		{onnxinit.TypeFloat, onnxpb.TensorProto_FLOAT},
		{onnxinit.TypeUint8, onnxpb.TensorProto_UINT8},
		{onnxinit.TypeInt8, onnxpb.TensorProto_INT8},
		{onnxinit.TypeUint16, onnxpb.TensorProto_UINT16},
		{onnxinit.TypeInt16, onnxpb.TensorProto_INT16},
		{onnxinit.TypeInt32, onnxpb.TensorProto_INT32},
		{onnxinit.TypeInt64, onnxpb.TensorProto_INT64},
		{onnxinit.TypeString, onnxpb.TensorProto_STRING},
		{onnxinit.TypeBool, onnxpb.TensorProto_BOOL},
		{onnxinit.TypeFloat16, onnxpb.TensorProto_FLOAT16},
		{onnxinit.TypeDouble, onnxpb.TensorProto_DOUBLE},
		{onnxinit.TypeUint32, onnxpb.TensorProto_UINT32},
		{onnxinit.TypeUint64, onnxpb.TensorProto_UINT64},
		{onnxinit.TypeBFloat16, onnxpb.TensorProto_BFLOAT16},
	} {
		if int32(c.got) != int32(c.want) {
			t.Errorf("onnxinit: %s is %d, onnx.proto says %d", c.want, c.got, int32(c.want))
		}
	}

	w := []float32{1, -1, 2, 0.5, -3, 1}
	model := tinyModel(t, w, []float32{0.5, -0.25})
	g := NewGraph("ints")
	x := g.Input("x", Int64, D(2))
	g.NodeOut("Add", []string{x, g.InitInt64("k", []int64{2}, []int64{-7, 1 << 40})}, []string{"y"})
	g.Output("y", Int64, D(2))
	mi, err := g.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	f, err := onnxinit.NewReader("tiny.onnx", bytes.NewReader(model), int64(len(model)), "")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	infos := f.Tensors()
	if len(infos) != 2 || infos[0].Name != "W" || infos[0].DType != tensor.F32 || !slices.Equal(infos[0].Shape, []int64{3, 2}) {
		t.Fatalf("tensors %+v", infos)
	}
	got, err := f.ReadFloat32("W", nil)
	if err != nil || !slices.Equal(got, w) {
		t.Fatalf("W = %v, %v; want %v", got, err, w)
	}
	fi, err := onnxinit.NewReader("ints.onnx", bytes.NewReader(mi), int64(len(mi)), "")
	if err != nil {
		t.Fatal(err)
	}
	defer fi.Close()
	raw, err := fi.ReadRaw("k", nil)
	if err != nil {
		t.Fatal(err)
	}
	if ti := fi.Tensors(); len(ti) != 1 || ti[0].DType != tensor.I64 || len(raw) != 16 ||
		int64(binary.LittleEndian.Uint64(raw)) != -7 || int64(binary.LittleEndian.Uint64(raw[8:])) != 1<<40 {
		t.Fatalf("k: %+v %x", ti, raw)
	}
}

func TestDuplicateNamePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	g := NewGraph("dup")
	g.Input("x", Float, D(1))
	g.InitFloat32("x", []int64{1}, []float32{1})
}

// TestExternalSession: the tiny model with its initializers in an external
// file runs in ONNX Runtime (created from bytes, told the folder) and gives
// the embedded model's outputs.
func TestExternalSession(t *testing.T) {
	orttest.Require(t)
	w := []float32{1, -2, 3, 4, 5, -6}
	b := []float32{0.5, -0.5}
	dir := t.TempDir()
	f, err := CreateExternalFile(dir, "weights.bin")
	if err != nil {
		t.Fatal(err)
	}
	g := NewGraph("tiny")
	g.SetExternal(f, 1)
	x := g.Input("x", Float, P("batch"), D(3))
	h := g.Op("Add", g.Op("MatMul", x, g.InitFloat32("W", []int64{3, 2}, w)), g.InitFloat32("b", []int64{2}, b))
	g.NodeOut("Relu", []string{h}, []string{"y"})
	g.Output("y", Float, P("batch"), D(2))
	model, err := g.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	xs := []float32{1, 2, 3, -1, 0, 1}
	got := runIn(t, model, xs, dir)
	want := run(t, tinyModel(t, w, b), xs)
	if !slices.Equal(got, want) {
		t.Fatalf("external %v, embedded %v", got, want)
	}
}
