package onnx

import (
	"encoding/binary"
	"errors"
	"math"
	"testing"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/nwc-project/nwc/internal/ortenv"
	"github.com/nwc-project/nwc/internal/ortenv/orttest"
	"github.com/nwc-project/nwc/loader/tensor"
)

// memSource is an in-memory tensor.Source of float32 tensors.
type memSource struct {
	infos []tensor.Info
	data  map[string][]float32
}

func (m *memSource) add(name string, shape []int64, v []float32) {
	if m.data == nil {
		m.data = map[string][]float32{}
	}
	m.infos = append(m.infos, tensor.Info{Name: name, DType: tensor.F32, Shape: shape, Size: int64(4 * len(v))})
	m.data[name] = v
}
func (m *memSource) Tensors() []tensor.Info { return m.infos }
func (m *memSource) Assets() []tensor.Asset { return nil }
func (m *memSource) Close() error           { return nil }
func (m *memSource) ReadRaw(name string, dst []byte) ([]byte, error) {
	v, ok := m.data[name]
	if !ok {
		return nil, tensor.ErrNotFound
	}
	b := make([]byte, 4*len(v))
	for i, f := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(f))
	}
	return b, nil
}
func (m *memSource) ReadFloat32(name string, dst []float32) ([]float32, error) {
	v, ok := m.data[name]
	if !ok {
		return nil, tensor.ErrNotFound
	}
	return append(dst[:0], v...), nil
}

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

func run(t *testing.T, model []byte, x []float32) []float32 {
	t.Helper()
	opts, err := ortenv.SessionOptions("cpu", 1)
	if err != nil {
		t.Fatal(err)
	}
	defer opts.Destroy()
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

func TestBuildRunReplace(t *testing.T) {
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

	// Replace W (and only W) from a source.
	w2 := []float32{0.1, 0.2, 0.3, 0.4, 0.5, 0.6}
	src := &memSource{}
	src.add("W", []int64{3, 2}, w2)
	src.add("unrelated", []int64{1}, []float32{7})
	m2, names, err := ReplaceInitializers(model, src, ReplaceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 1 || names[0] != "W" {
		t.Fatalf("replaced %v", names)
	}
	check(run(t, m2, x), ref(w2, b))

	// Renamed source tensor.
	src2 := &memSource{}
	src2.add("model.bias", []int64{2}, []float32{10, 20})
	m3, _, err := ReplaceInitializers(model, src2, ReplaceOptions{Names: []string{"b"},
		SourceName: func(s string) string { return "model.bias" }})
	if err != nil {
		t.Fatal(err)
	}
	check(run(t, m3, x), ref(w, []float32{10, 20}))
}

func TestReplaceErrors(t *testing.T) {
	model := tinyModel(t, make([]float32, 6), make([]float32, 2))
	bad := &memSource{}
	bad.add("W", []int64{2, 3}, make([]float32, 6))
	if _, _, err := ReplaceInitializers(model, bad, ReplaceOptions{}); !errors.Is(err, ErrShapeMismatch) {
		t.Fatalf("shape: %v", err)
	}
	if _, _, err := ReplaceInitializers(model, bad, ReplaceOptions{Names: []string{"nope"}}); !errors.Is(err, ErrNoInitializer) {
		t.Fatalf("missing initializer: %v", err)
	}
	none := &memSource{}
	none.add("other", []int64{1}, []float32{1})
	if _, _, err := ReplaceInitializers(model, none, ReplaceOptions{}); !errors.Is(err, ErrNoInitializer) {
		t.Fatalf("no match: %v", err)
	}
	if _, _, err := ReplaceInitializers(model, none, ReplaceOptions{Names: []string{"W"}}); !errors.Is(err, tensor.ErrNotFound) {
		t.Fatalf("missing source tensor: %v", err)
	}
	// An INT64 initializer cannot take float data.
	g := NewGraph("ints")
	x := g.Input("x", Int64, D(2))
	g.NodeOut("Add", []string{x, g.InitInt64("k", []int64{2}, []int64{1, 2})}, []string{"y"})
	g.Output("y", Int64, D(2))
	mi, err := g.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	fs := &memSource{}
	fs.add("k", []int64{2}, []float32{1, 2})
	if _, _, err := ReplaceInitializers(mi, fs, ReplaceOptions{}); !errors.Is(err, ErrDTypeMismatch) {
		t.Fatalf("dtype: %v", err)
	}
	if _, err := UnmarshalModel([]byte{0xff, 0xff}); err == nil {
		t.Fatal("garbage parsed")
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
