package onnx

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/plugin/onnx/onnxpb"
)

// TestExternalOver2GB: initializers totalling more than protobuf's 2 GB go
// to the sink, the model marshals, and its protobuf holds references only.
// One 64 MB slice is added 36 times (the sink keeps nothing).
func TestExternalOver2GB(t *testing.T) {
	const n = 16 << 20 // floats: 64 MB
	data := make([]float32, n)
	g := NewGraph("big")
	var sink DiscardSink
	g.SetExternal(&sink, 1024)
	x := g.Input("x", Float, D(n))
	for i := 0; i < 36; i++ {
		x = g.Op("Add", x, g.InitFloat32("w"+strconv.Itoa(i), []int64{n}, data))
	}
	g.InitFloat32("small", []int64{4}, []float32{1, 2, 3, 4}) // under the threshold: embedded
	g.Output(x, Float, D(n))
	b, err := g.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if g.ExternalBytes() != 36*4*n || g.EmbeddedBytes() != 16 || sink.Size != 36*4*n {
		t.Fatalf("external %d, embedded %d, sink %d", g.ExternalBytes(), g.EmbeddedBytes(), sink.Size)
	}
	if g.ExternalBytes() <= MaxModelBytes || len(b) > 64<<10 {
		t.Fatalf("external %d bytes, protobuf %d bytes", g.ExternalBytes(), len(b))
	}
	m, err := UnmarshalModel(b)
	if err != nil {
		t.Fatal(err)
	}
	for i, in := range m.GetGraph().GetInitializer() {
		ext := in.GetDataLocation() == onnxpb.TensorProto_EXTERNAL
		if ext != (in.GetName() != "small") || (ext && len(in.GetRawData()) > 0) {
			t.Fatalf("initializer %d %s: external %v, %d raw bytes", i, in.GetName(), ext, len(in.GetRawData()))
		}
		if ext {
			kv := map[string]string{}
			for _, e := range in.GetExternalData() {
				kv[e.GetKey()] = e.GetValue()
			}
			if kv["location"] != "discard" || kv["length"] != "67108864" || kv["offset"] == "" {
				t.Fatalf("initializer %s: external data %v", in.GetName(), kv)
			}
		}
	}
}

// TestExternalFile: the file holds each tensor at an aligned offset, the
// references say where, float16 data is rounded, and a failing sink fails
// Marshal.
func TestExternalFile(t *testing.T) {
	dir := t.TempDir()
	f, err := CreateExternalFile(dir, "w.bin")
	if err != nil {
		t.Fatal(err)
	}
	g := NewGraph("f")
	g.SetExternal(f, 1)
	g.InitFloat32("a", []int64{3}, []float32{1, 2, 3})
	g.InitFloat16("b", []int64{2}, []float32{0.5, -2})
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "w.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) != ExternalAlign+4 || f.Size() != int64(len(raw)) {
		t.Fatalf("file %d bytes, Size %d", len(raw), f.Size())
	}
	if got := raw[ExternalAlign:]; tensor.F16ToF32(uint16(got[0])|uint16(got[1])<<8) != 0.5 || tensor.F16ToF32(uint16(got[2])|uint16(got[3])<<8) != -2 {
		t.Fatalf("float16 data %v", got)
	}
	ins := g.Proto().GetInitializer()
	if ins[1].GetDataType() != Float16 || ins[1].GetExternalData()[1].GetValue() != "4096" {
		t.Fatalf("b: %v", ins[1])
	}
	// Writing after Close fails, and Marshal reports it.
	g.InitFloat32("c", []int64{1}, []float32{1})
	if _, err := g.Marshal(); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Marshal after a sink error: %v", err)
	}
	if _, err := CreateExternalFile(dir, "../x"); err == nil {
		t.Fatal("a path as file name accepted")
	}
}
