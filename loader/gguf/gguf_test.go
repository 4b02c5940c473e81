package gguf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/nwc-project/nwc/loader/tensor"
)

// ---- a tiny GGUF writer for tests ----

type testTensor struct {
	name string
	typ  GGMLType
	dims []uint64 // GGUF order, fastest first
	data []byte
	// offset overrides the computed data offset when >= 0 (hostile tests).
	offset int64
}

type ggufWriter struct {
	bytes.Buffer
}

func (w *ggufWriter) u32(v uint32) { binary.Write(&w.Buffer, binary.LittleEndian, v) }
func (w *ggufWriter) u64(v uint64) { binary.Write(&w.Buffer, binary.LittleEndian, v) }
func (w *ggufWriter) str(s string) { w.u64(uint64(len(s))); w.WriteString(s) }

func (w *ggufWriter) scalar(x any) {
	switch x := x.(type) {
	case string:
		w.str(x)
	case bool:
		if x {
			w.WriteByte(1)
		} else {
			w.WriteByte(0)
		}
	default:
		if err := binary.Write(&w.Buffer, binary.LittleEndian, x); err != nil {
			panic(err)
		}
	}
}

// value writes v without its type tag.
func (w *ggufWriter) value(v Value) {
	if v.Type != ValueArray {
		w.scalar(v.V)
		return
	}
	w.u32(uint32(v.Elem))
	rv := reflect.ValueOf(v.V)
	w.u64(uint64(rv.Len()))
	for i := 0; i < rv.Len(); i++ {
		e := rv.Index(i).Interface()
		if sub, ok := e.(Value); ok {
			w.value(sub)
		} else {
			w.scalar(e)
		}
	}
}

// buildGGUF encodes a GGUF file. align is the alignment used for the layout
// (write a general.alignment KV yourself when it is not 32).
func buildGGUF(version uint32, kvs []KV, tensors []testTensor, align int64) []byte {
	var w ggufWriter
	w.WriteString("GGUF")
	w.u32(version)
	w.u64(uint64(len(tensors)))
	w.u64(uint64(len(kvs)))
	for _, kv := range kvs {
		w.str(kv.Key)
		w.u32(uint32(kv.Value.Type))
		w.value(kv.Value)
	}
	off := int64(0)
	offs := make([]int64, len(tensors))
	for i, t := range tensors {
		offs[i] = off
		if t.offset >= 0 {
			offs[i] = t.offset
		}
		off += int64(len(t.data))
		off = (off + align - 1) / align * align
	}
	for i, t := range tensors {
		w.str(t.name)
		w.u32(uint32(len(t.dims)))
		for _, d := range t.dims {
			w.u64(d)
		}
		w.u32(uint32(t.typ))
		w.u64(uint64(offs[i]))
	}
	for int64(w.Len())%align != 0 {
		w.WriteByte(0)
	}
	start := int64(w.Len())
	for i, t := range tensors {
		if t.offset >= 0 {
			continue
		}
		for int64(w.Len()) < start+offs[i] {
			w.WriteByte(0)
		}
		w.Write(t.data)
	}
	for int64(w.Len())%align != 0 {
		w.WriteByte(0)
	}
	return w.Bytes()
}

// ---- the valid sample ----

func f32bytes(v ...float32) []byte {
	b := make([]byte, 4*len(v))
	for i, f := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(f))
	}
	return b
}

func sampleKVs() []KV {
	return []KV{
		{"general.architecture", Value{Type: ValueString, V: "llama"}},
		{"general.alignment", Value{Type: ValueUint32, V: uint32(64)}},
		{"t.u8", Value{Type: ValueUint8, V: uint8(200)}},
		{"t.i8", Value{Type: ValueInt8, V: int8(-100)}},
		{"t.u16", Value{Type: ValueUint16, V: uint16(65000)}},
		{"t.i16", Value{Type: ValueInt16, V: int16(-32000)}},
		{"t.u32", Value{Type: ValueUint32, V: uint32(4000000000)}},
		{"t.i32", Value{Type: ValueInt32, V: int32(-2000000000)}},
		{"t.f32", Value{Type: ValueFloat32, V: float32(1e-5)}},
		{"t.bool", Value{Type: ValueBool, V: true}},
		{"t.str", Value{Type: ValueString, V: "héllo \"wörld\"\n{{ chat }}"}},
		{"t.u64", Value{Type: ValueUint64, V: uint64(math.MaxUint64)}},
		{"t.i64", Value{Type: ValueInt64, V: int64(math.MinInt64)}},
		{"t.f64", Value{Type: ValueFloat64, V: 0.1}},
		{"t.bin", Value{Type: ValueString, V: "\xff\xfe bytes"}},
		{"t.empty", Value{Type: ValueString, V: ""}},
		{"t.a.u8", Value{Type: ValueArray, Elem: ValueUint8, V: []uint8{0, 1, 255}}},
		{"t.a.i8", Value{Type: ValueArray, Elem: ValueInt8, V: []int8{-128, 127}}},
		{"t.a.u16", Value{Type: ValueArray, Elem: ValueUint16, V: []uint16{1, 65535}}},
		{"t.a.i16", Value{Type: ValueArray, Elem: ValueInt16, V: []int16{-1, 2}}},
		{"t.a.u32", Value{Type: ValueArray, Elem: ValueUint32, V: []uint32{7}}},
		{"t.a.i32", Value{Type: ValueArray, Elem: ValueInt32, V: []int32{1, 2, 3}}},
		{"t.a.f32", Value{Type: ValueArray, Elem: ValueFloat32, V: []float32{0.1, -2.5, float32(math.Inf(-1)), math.MaxFloat32}}},
		{"t.a.bool", Value{Type: ValueArray, Elem: ValueBool, V: []bool{true, false, true}}},
		{"t.a.str", Value{Type: ValueArray, Elem: ValueString, V: []string{"a", "", "Ġthe", "<|im_start|>"}}},
		{"t.a.binstr", Value{Type: ValueArray, Elem: ValueString, V: []string{"ok", "\x80"}}},
		{"t.a.u64", Value{Type: ValueArray, Elem: ValueUint64, V: []uint64{1 << 63}}},
		{"t.a.i64", Value{Type: ValueArray, Elem: ValueInt64, V: []int64{-1 << 62}}},
		{"t.a.f64", Value{Type: ValueArray, Elem: ValueFloat64, V: []float64{math.Pi, 5e-324}}},
		{"t.a.empty", Value{Type: ValueArray, Elem: ValueInt32, V: []int32{}}},
		{"t.a.nested", Value{Type: ValueArray, Elem: ValueArray, V: []Value{
			{Type: ValueArray, Elem: ValueString, V: []string{"x", "y"}},
			{Type: ValueArray, Elem: ValueArray, V: []Value{
				{Type: ValueArray, Elem: ValueInt16, V: []int16{5}},
			}},
		}}},
		{"\xc0bad key", Value{Type: ValueUint8, V: uint8(1)}},
	}
}

func sampleTensors() []testTensor {
	f16 := make([]byte, 8)
	for i, f := range []float32{1, -2, 0.5, 65504} {
		binary.LittleEndian.PutUint16(f16[2*i:], tensor.F32ToF16(f))
	}
	bf16 := make([]byte, 4)
	binary.LittleEndian.PutUint16(bf16, tensor.F32ToBF16(3))
	binary.LittleEndian.PutUint16(bf16[2:], tensor.F32ToBF16(-0.25))
	q8 := make([]byte, 2*34)
	for k := 0; k < 2; k++ {
		binary.LittleEndian.PutUint16(q8[34*k:], tensor.F32ToF16(0.5))
		for j := 0; j < 32; j++ {
			q8[34*k+2+j] = byte(int8(j - 16 + k))
		}
	}
	q41 := make([]byte, 20)
	binary.LittleEndian.PutUint16(q41, tensor.F32ToF16(1))
	binary.LittleEndian.PutUint16(q41[2:], tensor.F32ToF16(-8))
	for j := 0; j < 16; j++ {
		q41[4+j] = byte(j) | byte(j)<<4
	}
	q6k := make([]byte, 210)
	i32 := make([]byte, 12)
	for i := 0; i < 3; i++ {
		binary.LittleEndian.PutUint32(i32[4*i:], uint32(int32(-i)))
	}
	return []testTensor{
		{name: "f32", typ: TypeF32, dims: []uint64{3, 2}, data: f32bytes(1, 2, 3, 4, 5, 6), offset: -1},
		{name: "f16", typ: TypeF16, dims: []uint64{4}, data: f16, offset: -1},
		{name: "bf16", typ: TypeBF16, dims: []uint64{2, 1, 1}, data: bf16, offset: -1},
		{name: "q8_0", typ: TypeQ8_0, dims: []uint64{32, 2}, data: q8, offset: -1},
		{name: "q4_1", typ: TypeQ4_1, dims: []uint64{32}, data: q41, offset: -1},
		{name: "q6_k", typ: TypeQ6_K, dims: []uint64{256, 1}, data: q6k, offset: -1},
		{name: "i32", typ: TypeI32, dims: []uint64{3}, data: i32, offset: -1},
		{name: "iq2_xxs", typ: TypeIQ2_XXS, dims: []uint64{256}, data: make([]byte, 66), offset: -1},
		{name: "empty", typ: TypeF32, dims: []uint64{0, 4}, data: nil, offset: -1},
	}
}

func sampleFile() []byte { return buildGGUF(3, sampleKVs(), sampleTensors(), 64) }

func writeTemp(t testing.TB, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "model.gguf")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestOpenValid(t *testing.T) {
	for _, version := range []uint32{2, 3} {
		t.Run(fmt.Sprint("v", version), func(t *testing.T) {
			p := writeTemp(t, buildGGUF(version, sampleKVs(), sampleTensors(), 64))
			g, err := Open(p)
			if err != nil {
				t.Fatal(err)
			}
			defer g.Close()
			checkSample(t, g)
		})
	}
}

func checkSample(t *testing.T, g *File) {
	t.Helper()
	if g.Alignment() != 64 || g.DataOffset()%64 != 0 {
		t.Errorf("alignment %d, data offset %d", g.Alignment(), g.DataOffset())
	}
	if !reflect.DeepEqual(g.Metadata(), sampleKVs()) {
		for i, kv := range g.Metadata() {
			if want := sampleKVs()[i]; !reflect.DeepEqual(kv, want) {
				t.Errorf("kv %d: got %#v, want %#v", i, kv, want)
			}
		}
		t.Fatal("metadata differs")
	}
	if s, ok := g.GetString("general.architecture"); !ok || s != "llama" {
		t.Errorf("GetString = %q %v", s, ok)
	}
	for key, want := range map[string]uint64{"t.u8": 200, "t.u16": 65000, "t.u32": 4000000000, "t.u64": math.MaxUint64} {
		if u, ok := g.GetUint(key); !ok || u != want {
			t.Errorf("GetUint(%s) = %d %v", key, u, ok)
		}
	}
	if _, ok := g.GetUint("t.i8"); ok {
		t.Error("GetUint of a negative int8 succeeded")
	}
	if i, ok := g.GetInt("t.i64"); !ok || i != math.MinInt64 {
		t.Errorf("GetInt = %d %v", i, ok)
	}
	if i, ok := g.GetInt("t.u32"); !ok || i != 4000000000 {
		t.Errorf("GetInt(u32) = %d %v", i, ok)
	}
	if f, ok := g.GetFloat("t.f32"); !ok || float32(f) != 1e-5 {
		t.Errorf("GetFloat = %v %v", f, ok)
	}
	if b, ok := g.GetBool("t.bool"); !ok || !b {
		t.Errorf("GetBool = %v %v", b, ok)
	}
	if s, ok := g.GetStrings("t.a.str"); !ok || len(s) != 4 || s[2] != "Ġthe" {
		t.Errorf("GetStrings = %q %v", s, ok)
	}
	if _, ok := g.GetString("missing"); ok {
		t.Error("missing key found")
	}
	if _, ok := g.GetString("t.u8"); ok {
		t.Error("GetString of a uint8 succeeded")
	}

	wantShapes := map[string][]int64{
		"f32": {2, 3}, "f16": {4}, "bf16": {1, 1, 2}, "q8_0": {2, 32}, "q4_1": {32},
		"q6_k": {1, 256}, "i32": {3}, "iq2_xxs": {256}, "empty": {4, 0},
	}
	infos := g.Tensors()
	if len(infos) != len(wantShapes) {
		t.Fatalf("%d tensors", len(infos))
	}
	for i, ti := range infos {
		if ti.Name != sampleTensors()[i].name {
			t.Errorf("tensor %d is %q, want file order", i, ti.Name)
		}
		if !reflect.DeepEqual(ti.Shape, wantShapes[ti.Name]) {
			t.Errorf("%s: shape %v, want %v", ti.Name, ti.Shape, wantShapes[ti.Name])
		}
	}
	for _, st := range sampleTensors() {
		raw, err := g.ReadRaw(st.name, nil)
		if err != nil {
			t.Fatalf("ReadRaw(%s): %v", st.name, err)
		}
		if !bytes.Equal(raw, st.data) && !(len(raw) == 0 && len(st.data) == 0) {
			t.Errorf("ReadRaw(%s) = %x, want %x", st.name, raw, st.data)
		}
	}
	wantF := map[string][]float32{
		"f32":  {1, 2, 3, 4, 5, 6},
		"f16":  {1, -2, 0.5, 65504},
		"bf16": {3, -0.25},
	}
	q8 := make([]float32, 64)
	for k := 0; k < 2; k++ {
		for j := 0; j < 32; j++ {
			q8[32*k+j] = float32(j-16+k) * 0.5
		}
	}
	wantF["q8_0"] = q8
	q41 := make([]float32, 32)
	for j := 0; j < 16; j++ {
		q41[j], q41[j+16] = float32(j)-8, float32(j)-8
	}
	wantF["q4_1"] = q41
	wantF["q6_k"] = make([]float32, 256) // d = 0
	wantF["empty"] = []float32{}
	for name, want := range wantF {
		got, err := g.ReadFloat32(name, nil)
		if err != nil {
			t.Fatalf("ReadFloat32(%s): %v", name, err)
		}
		if len(got) != len(want) {
			t.Fatalf("ReadFloat32(%s): %d values", name, len(got))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("ReadFloat32(%s)[%d] = %v, want %v", name, i, got[i], want[i])
			}
		}
	}
	// Listed but not convertible.
	ti, _ := g.TensorInfo("iq2_xxs")
	if ti.Type != TypeIQ2_XXS || ti.DType != tensor.Invalid || ti.Size != 66 {
		t.Errorf("iq2_xxs info %+v", ti)
	}
	if _, err := g.ReadFloat32("iq2_xxs", nil); !errors.Is(err, tensor.ErrUnsupportedDType) || !strings.Contains(err.Error(), "IQ2_XXS") {
		t.Errorf("ReadFloat32(iq2_xxs): %v", err)
	}
	if _, err := g.ReadFloat32("i32", nil); !errors.Is(err, tensor.ErrUnsupportedDType) {
		t.Errorf("ReadFloat32(i32): %v", err)
	}
	if _, err := g.ReadRaw("nope", nil); !errors.Is(err, tensor.ErrNotFound) {
		t.Errorf("ReadRaw(nope): %v", err)
	}
	if _, err := g.ReadFloat32("nope", nil); !errors.Is(err, tensor.ErrNotFound) {
		t.Errorf("ReadFloat32(nope): %v", err)
	}
	// dst reuse
	buf := make([]float32, 100)
	got, err := g.ReadFloat32("f32", buf)
	if err != nil || &got[0] != &buf[0] {
		t.Errorf("ReadFloat32 did not reuse dst: %v", err)
	}
}

func TestMetadataJSONRoundTrip(t *testing.T) {
	data := sampleFile()
	g, err := NewReader(bytes.NewReader(data), int64(len(data)), "mem")
	if err != nil {
		t.Fatal(err)
	}
	assets := g.Assets()
	if len(assets) != 1 || assets[0].Name != MetadataAsset {
		t.Fatalf("assets %v", assets)
	}
	js := assets[0].Data
	for _, frag := range []string{
		`{"key":"t.u32","type":"uint32","value":4000000000}`,
		`{"key":"t.u64","type":"uint64","value":18446744073709551615}`,
		`{"key":"t.a.str","type":"array","elem":"string","value":["a","","Ġthe","\u003c|im_start|\u003e"]}`,
		`"type":"array","elem":"array","value":[{"type":"array","elem":"string","value":["x","y"]}`,
		`"-Inf"`,
		`{"key":"t.bin","type":"string","encoding":"base64"`,
	} {
		if !bytes.Contains(js, []byte(frag)) {
			t.Errorf("JSON lacks %s:\n%s", frag, js)
		}
	}
	kvs, err := ParseMetadataJSON(js)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(kvs, g.Metadata()) {
		for i := range kvs {
			if !reflect.DeepEqual(kvs[i], g.Metadata()[i]) {
				t.Errorf("kv %d: %#v != %#v", i, kvs[i], g.Metadata()[i])
			}
		}
		t.Fatal("round trip differs")
	}

	// NaN / Inf scalars and float32 precision.
	special := []KV{
		{"nan", Value{Type: ValueFloat32, V: float32(math.NaN())}},
		{"inf", Value{Type: ValueFloat64, V: math.Inf(1)}},
		{"tiny", Value{Type: ValueFloat32, V: float32(math.SmallestNonzeroFloat32)}},
		{"odd", Value{Type: ValueFloat32, V: math.Float32frombits(0x3f8ccccd)}},
	}
	js, err = MarshalMetadataJSON(special)
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseMetadataJSON(js)
	if err != nil {
		t.Fatal(err)
	}
	if f := back[0].Value.V.(float32); !math.IsNaN(float64(f)) {
		t.Errorf("nan -> %v", f)
	}
	if !reflect.DeepEqual(back[1:], special[1:]) {
		t.Errorf("special floats: %v", back)
	}

	// Bad JSON is rejected, not mis-typed.
	for _, bad := range []string{
		`{}`,
		`[{"key":"a","type":"uint8","value":256}]`,
		`[{"key":"a","type":"int8","value":-129}]`,
		`[{"key":"a","type":"uint32","value":1.5}]`,
		`[{"key":"a","type":"uint64","value":-1}]`,
		`[{"key":"a","type":"float32","value":"x"}]`,
		`[{"key":"a","type":"bool","value":1}]`,
		`[{"key":"a","type":"string","value":3}]`,
		`[{"key":"a","type":"complex","value":3}]`,
		`[{"key":"a","type":"array","elem":"nope","value":[]}]`,
		`[{"key":"a","type":"array","elem":"int32","value":[1,"2"]}]`,
		`[{"key":"a","type":"array","elem":"array","value":[{"type":"int8","value":1}]}]`,
		`[{"key":"a","type":"uint8","value":1},{"key":"a","type":"uint8","value":1}]`,
		`[{"key":"a","type":"uint8","encoding":"base64","value":1}]`,
		`[{"key":"a","type":"string","encoding":"base64","value":"!!"}]`,
	} {
		if _, err := ParseMetadataJSON([]byte(bad)); err == nil {
			t.Errorf("ParseMetadataJSON(%s) succeeded", bad)
		}
	}
	// Marshal refuses inconsistent values.
	if _, err := MarshalMetadataJSON([]KV{{"a", Value{Type: ValueUint8, V: 1}}}); err == nil {
		t.Error("marshal of an int as uint8 succeeded")
	}
}

// hostile builds a variant of a minimal valid file.
func hostileHeader(version uint32, nt, nkv uint64) []byte {
	var w ggufWriter
	w.WriteString("GGUF")
	w.u32(version)
	w.u64(nt)
	w.u64(nkv)
	return w.Bytes()
}

func TestHostile(t *testing.T) {
	one := func(kvs []KV, tensors ...testTensor) []byte { return buildGGUF(3, kvs, tensors, 32) }
	f32t := func(name string, dims []uint64, n int) testTensor {
		return testTensor{name: name, typ: TypeF32, dims: dims, data: make([]byte, 4*n), offset: -1}
	}
	kvStr := func(key string) []KV { return []KV{{key, Value{Type: ValueString, V: "v"}}} }
	raw := func(b ...[]byte) []byte { return bytes.Join(b, nil) }
	le64 := func(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }
	le32 := func(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

	cases := []struct {
		name string
		data []byte
		want error
		msg  string
	}{
		{"empty", nil, ErrBadMagic, "too short"},
		{"bad magic", []byte("GGML\x03\x00\x00\x00"), ErrBadMagic, "magic"},
		{"version 1", hostileHeader(1, 0, 0), ErrVersion, "version 1"},
		{"version 99", hostileHeader(99, 0, 0), ErrVersion, "version 99"},
		{"big endian", []byte("GGUF\x00\x00\x00\x03" + strings.Repeat("\x00", 16)), ErrVersion, "big-endian"},
		{"huge tensor count", hostileHeader(3, 1<<62, 0), ErrCorrupt, "tensor count"},
		{"huge kv count", hostileHeader(3, 0, math.MaxUint64), ErrCorrupt, "metadata count"},
		{"huge key length", raw(hostileHeader(3, 0, 1), le64(math.MaxUint64), make([]byte, 16)), ErrCorrupt, "string length"},
		{"key past EOF", raw(hostileHeader(3, 0, 1), le64(100), make([]byte, 16)), ErrCorrupt, "exceeds"},
		{"huge string", raw(hostileHeader(3, 0, 1), le64(1), []byte("k"), le32(uint32(ValueString)), le64(1<<40)), ErrCorrupt, "string length"},
		{"huge array", raw(hostileHeader(3, 0, 1), le64(1), []byte("k"), le32(uint32(ValueArray)), le32(uint32(ValueUint64)), le64(1<<61), make([]byte, 64)), ErrCorrupt, "array of"},
		{"huge string array", raw(hostileHeader(3, 0, 1), le64(1), []byte("k"), le32(uint32(ValueArray)), le32(uint32(ValueString)), le64(1<<40), make([]byte, 64)), ErrCorrupt, "array of"},
		{"array elem type", raw(hostileHeader(3, 0, 1), le64(1), []byte("k"), le32(uint32(ValueArray)), le32(77), le64(0)), ErrCorrupt, "unknown value type"},
		{"value type", raw(hostileHeader(3, 0, 1), le64(1), []byte("k"), le32(13), make([]byte, 16)), ErrCorrupt, "unknown value type"},
		{"deep nesting", func() []byte {
			b := raw(hostileHeader(3, 0, 1), le64(1), []byte("k"), le32(uint32(ValueArray)))
			for i := 0; i < 100; i++ {
				b = raw(b, le32(uint32(ValueArray)), le64(1))
			}
			return raw(b, le32(uint32(ValueUint8)), le64(0))
		}(), ErrCorrupt, "nested"},
		{"bool 2", raw(hostileHeader(3, 0, 1), le64(1), []byte("k"), le32(uint32(ValueBool)), []byte{2}), ErrCorrupt, "bool"},
		{"duplicate key", one(append(kvStr("a"), kvStr("a")...)), ErrCorrupt, "duplicate metadata key"},
		{"alignment type", one([]KV{{"general.alignment", Value{Type: ValueUint64, V: uint64(32)}}}), ErrCorrupt, "alignment"},
		{"alignment 0", one([]KV{{"general.alignment", Value{Type: ValueUint32, V: uint32(0)}}}), ErrCorrupt, "alignment"},
		{"alignment 48", one([]KV{{"general.alignment", Value{Type: ValueUint32, V: uint32(48)}}}), ErrCorrupt, "alignment"},
		{"duplicate tensor", one(nil, f32t("a", []uint64{8}, 8), f32t("a", []uint64{8}, 8)), ErrCorrupt, "duplicate tensor"},
		{"rank 9", one(nil, f32t("a", []uint64{1, 1, 1, 1, 1, 1, 1, 1, 1}, 1)), ErrCorrupt, "dimensions"},
		{"huge dim", one(nil, f32t("a", []uint64{1 << 62}, 1)), ErrCorrupt, "dimension"},
		{"dims overflow", one(nil, f32t("a", []uint64{1 << 30, 1 << 30, 1 << 30}, 1)), ErrCorrupt, "elements"},
		{"unknown ggml type", one(nil, testTensor{name: "a", typ: 77, dims: []uint64{4}, data: make([]byte, 16), offset: -1}), ErrCorrupt, "unknown ggml type 77"},
		{"partial block", one(nil, testTensor{name: "a", typ: TypeQ8_0, dims: []uint64{31}, data: make([]byte, 34), offset: -1}), ErrCorrupt, "block size"},
		{"data past EOF", one(nil, f32t("blk.0.attn_q.weight", []uint64{8}, 8), testTensor{name: "b", typ: TypeF32, dims: []uint64{1000}, offset: 32}), ErrCorrupt, `tensor "b": data [`},
		{"offset past EOF", one(nil, testTensor{name: "a", typ: TypeF32, dims: []uint64{1}, offset: 1 << 40}), ErrCorrupt, "exceeds file size"},
		{"offset huge", one(nil, testTensor{name: "a", typ: TypeF32, dims: []uint64{1}, offset: math.MaxInt64}), ErrCorrupt, "exceeds file size"},
		{"misaligned", one(nil, testTensor{name: "a", typ: TypeF32, dims: []uint64{1}, offset: 4}, f32t("b", []uint64{16}, 16)), ErrCorrupt, "alignment"},
		{"overlap", one(nil, f32t("a", []uint64{16}, 16), testTensor{name: "b", typ: TypeF32, dims: []uint64{8}, offset: 32}), ErrCorrupt, "overlap"},
		{"huge tensor name", raw(hostileHeader(3, 1, 0), le64(1<<50), make([]byte, 32)), ErrCorrupt, "string length"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g, err := NewReader(bytes.NewReader(c.data), int64(len(c.data)), "model.gguf")
			if err == nil {
				g.Close()
				t.Fatalf("no error")
			}
			if !errors.Is(err, c.want) {
				t.Errorf("error %q does not wrap %q", err, c.want)
			}
			if !strings.HasPrefix(err.Error(), "gguf: model.gguf: ") || !strings.Contains(err.Error(), c.msg) {
				t.Errorf("error %q: want prefix and %q", err, c.msg)
			}
		})
	}
}

func TestTruncated(t *testing.T) {
	data := sampleFile()
	g, err := NewReader(bytes.NewReader(data), int64(len(data)), "x")
	if err != nil {
		t.Fatal(err)
	}
	// The last tensor (iq2_xxs / empty) ends before the padding: everything
	// shorter than the end of the last tensor's data must fail.
	end := int64(0)
	for _, ti := range g.TensorInfos() {
		end = max(end, g.DataOffset()+ti.Offset+ti.Size)
	}
	for n := 0; n < int(end); n++ {
		g, err := NewReader(bytes.NewReader(data[:n]), int64(n), "x")
		if err == nil {
			g.Close()
			t.Fatalf("truncated to %d of %d bytes: no error", n, end)
		}
		if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrBadMagic) {
			t.Fatalf("truncated to %d: %v", n, err)
		}
	}
}

// A file that lies about its size gets errors from ReadRaw, not garbage.
func TestShortRead(t *testing.T) {
	data := sampleFile()
	g, err := NewReader(bytes.NewReader(data), int64(len(data)), "x")
	if err != nil {
		t.Fatal(err)
	}
	ti, _ := g.TensorInfo("iq2_xxs")
	cut := g.DataOffset() + ti.Offset + 1
	g, err = NewReader(bytes.NewReader(data[:cut]), int64(len(data)), "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.ReadRaw("f32", nil); err != nil {
		t.Error(err)
	}
	if _, err := g.ReadRaw("iq2_xxs", nil); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "short read") {
		t.Errorf("short read: %v", err)
	}
}

func TestOpenErrors(t *testing.T) {
	if _, err := Open(filepath.Join(t.TempDir(), "missing.gguf")); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	if _, err := Open(t.TempDir()); err == nil {
		t.Error("directory opened")
	}
	p := writeTemp(t, []byte("GGUF\x01\x00\x00\x00"))
	if _, err := Open(p); !errors.Is(err, ErrVersion) || !strings.Contains(err.Error(), p) {
		t.Errorf("v1: %v", err)
	}
	g, err := Open(writeTemp(t, sampleFile()))
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if err := g.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	if _, err := g.ReadRaw("f32", nil); err == nil {
		t.Error("read after Close")
	}
}

func TestConcurrentReads(t *testing.T) {
	g, err := Open(writeTemp(t, sampleFile()))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < 50; k++ {
				for _, name := range []string{"f32", "q8_0", "q4_1", "q6_k", "f16"} {
					if _, err := g.ReadFloat32(name, nil); err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestGGMLTypes(t *testing.T) {
	for gt, ti := range ggmlTypes {
		if ti.dtype == tensor.Invalid {
			continue
		}
		if ti.dtype.BlockElems() != ti.blockElems || ti.dtype.BlockBytes() != ti.blockBytes || ti.dtype.String() != ti.name {
			t.Errorf("%s: geometry differs from tensor.%s", gt, ti.dtype)
		}
		if back, ok := GGMLTypeOf(ti.dtype); !ok || back != gt {
			t.Errorf("GGMLTypeOf(%s) = %v", ti.dtype, back)
		}
	}
	if _, ok := GGMLTypeOf(tensor.U8); ok {
		t.Error("U8 has a GGML type")
	}
	if GGMLType(99).String() != "ggml_type(99)" {
		t.Error(GGMLType(99).String())
	}
}

func FuzzOpen(f *testing.F) {
	data := sampleFile()
	f.Add(data)
	for _, n := range []int{0, 4, 8, 16, 24, 40, 100, 300, len(data) / 2, len(data) - 1} {
		if n <= len(data) {
			f.Add(data[:n])
		}
	}
	f.Add(buildGGUF(2, sampleKVs()[:5], sampleTensors()[:3], 64))
	f.Add(hostileHeader(3, 1<<62, 0))
	f.Fuzz(func(t *testing.T, data []byte) {
		g, err := NewReader(bytes.NewReader(data), int64(len(data)), "fuzz")
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrBadMagic) && !errors.Is(err, ErrVersion) {
				t.Fatalf("error wraps no sentinel: %v", err)
			}
			return
		}
		defer g.Close()
		for _, ti := range g.Tensors() {
			raw, err := g.ReadRaw(ti.Name, nil)
			if err != nil {
				t.Fatalf("ReadRaw(%q) of a validated file: %v", ti.Name, err)
			}
			if int64(len(raw)) != ti.Size {
				t.Fatalf("ReadRaw(%q): %d bytes, want %d", ti.Name, len(raw), ti.Size)
			}
			if ti.DType.IsFloat() {
				if _, err := g.ReadFloat32(ti.Name, nil); err != nil {
					t.Fatalf("ReadFloat32(%q): %v", ti.Name, err)
				}
			}
		}
		assets := g.Assets()
		if len(assets) != 1 {
			t.Fatalf("%d assets", len(assets))
		}
		kvs, err := ParseMetadataJSON(assets[0].Data)
		if err != nil {
			t.Fatalf("metadata JSON does not parse back: %v", err)
		}
		if len(kvs) != len(g.Metadata()) {
			t.Fatalf("metadata JSON: %d kvs, want %d", len(kvs), len(g.Metadata()))
		}
	})
}
