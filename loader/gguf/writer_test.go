package gguf

import (
	"bytes"
	"errors"
	"testing"
)

func writeTensorsOf(ts []testTensor) []WriteTensor {
	var out []WriteTensor
	for _, t := range ts {
		shape := make([]int64, len(t.dims))
		for i, d := range t.dims {
			shape[len(t.dims)-1-i] = int64(d)
		}
		out = append(out, WriteTensor{Name: t.name, Type: t.typ, Shape: shape})
	}
	return out
}

// The writer produces exactly the bytes of the test encoder (every value
// type, nested arrays, general.alignment 64, quantized and empty tensors),
// and the reader reads them back.
func TestWriterMatchesEncoder(t *testing.T) {
	kvs, ts := sampleKVs(), sampleTensors()
	want := buildGGUF(3, kvs, ts, 64)
	var buf bytes.Buffer
	w, err := NewWriter(&buf, kvs, writeTensorsOf(ts))
	if err != nil {
		t.Fatal(err)
	}
	if w.Layout().FileSize != int64(len(want)) || w.Layout().Alignment != 64 {
		t.Errorf("layout %+v, file %d bytes", w.Layout(), len(want))
	}
	for _, tt := range ts {
		if err := w.WriteTensor(tt.name, tt.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Fatalf("writer output (%d bytes) differs from the encoder's (%d bytes)", buf.Len(), len(want))
	}
	g, err := NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()), "w.gguf")
	if err != nil {
		t.Fatal(err)
	}
	checkSample(t, g)
}

func TestWriterErrors(t *testing.T) {
	f32 := []WriteTensor{{Name: "a", Type: TypeF32, Shape: []int64{2}}, {Name: "b", Type: TypeF32, Shape: []int64{1}}}
	u32 := func(x uint32) Value { return Value{Type: ValueUint32, V: x} }
	for name, c := range map[string]struct {
		kvs []KV
		ts  []WriteTensor
	}{
		"dup key":        {[]KV{{"k", u32(1)}, {"k", u32(2)}}, nil},
		"bad alignment":  {[]KV{{"general.alignment", u32(48)}}, nil},
		"alignment type": {[]KV{{"general.alignment", Value{Type: ValueUint64, V: uint64(32)}}}, nil},
		"bad value":      {[]KV{{"k", Value{Type: ValueUint32, V: "x"}}}, nil},
		"dup tensor":     {nil, []WriteTensor{f32[0], f32[0]}},
		"no name":        {nil, []WriteTensor{{Type: TypeF32, Shape: []int64{1}}}},
		"5 dims":         {nil, []WriteTensor{{Name: "x", Type: TypeF32, Shape: []int64{1, 1, 1, 1, 1}}}},
		"negative dim":   {nil, []WriteTensor{{Name: "x", Type: TypeF32, Shape: []int64{-1}}}},
		"block size":     {nil, []WriteTensor{{Name: "x", Type: TypeQ8_0, Shape: []int64{2, 16}}}},
		"unknown type":   {nil, []WriteTensor{{Name: "x", Type: GGMLType(99), Shape: []int64{1}}}},
	} {
		if _, err := NewWriter(&bytes.Buffer{}, c.kvs, c.ts); !errors.Is(err, ErrWriter) {
			t.Errorf("%s: %v", name, err)
		}
	}
	w, err := NewWriter(&bytes.Buffer{}, nil, f32)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteTensor("b", make([]byte, 4)); !errors.Is(err, ErrWriter) {
		t.Errorf("out of order: %v", err)
	}
	if err := w.WriteTensor("a", make([]byte, 4)); !errors.Is(err, ErrWriter) {
		t.Errorf("short: %v", err)
	}
	if err := w.WriteTensor("a", make([]byte, 8)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); !errors.Is(err, ErrWriter) {
		t.Errorf("close early: %v", err)
	}
	if err := w.WriteTensor("b", make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteTensor("b", make([]byte, 4)); !errors.Is(err, ErrWriter) {
		t.Errorf("after close: %v", err)
	}
	// A failing io.Writer: the error sticks and names the tensor.
	boom := errors.New("boom")
	fw := &limitWriter{limit: 40, err: boom}
	if _, err := NewWriter(fw, nil, f32); !errors.Is(err, boom) {
		t.Errorf("header: %v", err)
	}
}

type limitWriter struct {
	n, limit int
	err      error
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if l.n+len(p) > l.limit {
		return 0, l.err
	}
	l.n += len(p)
	return len(p), nil
}
