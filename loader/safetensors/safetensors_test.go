package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/nwc-project/nwc/loader/tensor"
)

// raw builds safetensors bytes from a header string and data.
func raw(hdr string, data []byte) []byte {
	b := make([]byte, 8, 8+len(hdr)+len(data))
	binary.LittleEndian.PutUint64(b, uint64(len(hdr)))
	b = append(b, hdr...)
	return append(b, data...)
}

func f32bytes(v ...float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

type testTensor struct {
	info tensor.Info
	data []byte
}

func sampleTensors() []testTensor {
	f16 := make([]byte, 6)
	bf16 := make([]byte, 6)
	f64 := make([]byte, 16)
	for i, v := range []float32{1.5, -2, 0.25} {
		binary.LittleEndian.PutUint16(f16[2*i:], tensor.F32ToF16(v))
		binary.LittleEndian.PutUint16(bf16[2*i:], tensor.F32ToBF16(v))
	}
	binary.LittleEndian.PutUint64(f64, math.Float64bits(3.5))
	binary.LittleEndian.PutUint64(f64[8:], math.Float64bits(-1))
	return []testTensor{
		{tensor.Info{Name: "w.f32", DType: tensor.F32, Shape: []int64{2, 3}, Size: 24}, f32bytes(1, 2, 3, 4, 5, 6)},
		{tensor.Info{Name: "w.f16", DType: tensor.F16, Shape: []int64{3}, Size: 6}, f16},
		{tensor.Info{Name: "w.bf16", DType: tensor.BF16, Shape: []int64{1, 3}, Size: 6}, bf16},
		{tensor.Info{Name: "w.f64", DType: tensor.F64, Shape: []int64{2}, Size: 16}, f64},
		{tensor.Info{Name: "scalar", DType: tensor.F32, Shape: []int64{}, Size: 4}, f32bytes(7)},
		{tensor.Info{Name: "empty", DType: tensor.F32, Shape: []int64{0, 4}, Size: 0}, nil},
		{tensor.Info{Name: "ids", DType: tensor.I64, Shape: []int64{2}, Size: 16}, []byte{1, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
		{tensor.Info{Name: "mask", DType: tensor.Bool, Shape: []int64{3}, Size: 3}, []byte{1, 0, 1}},
		{tensor.Info{Name: "q", DType: tensor.I8, Shape: []int64{2}, Size: 2}, []byte{0x80, 0x7f}},
		{tensor.Info{Name: "u", DType: tensor.U8, Shape: []int64{1}, Size: 1}, []byte{200}},
		{tensor.Info{Name: "i16", DType: tensor.I16, Shape: []int64{1}, Size: 2}, []byte{1, 2}},
		{tensor.Info{Name: "i32", DType: tensor.I32, Shape: []int64{1}, Size: 4}, []byte{1, 2, 3, 4}},
		{tensor.Info{Name: `we"ird\name ü`, DType: tensor.F32, Shape: []int64{1}, Size: 4}, f32bytes(-0.5)},
	}
}

func writeSample(t *testing.T, path string, ts []testTensor, md map[string]string) {
	t.Helper()
	infos := make([]tensor.Info, len(ts))
	for i, x := range ts {
		infos[i] = x.info
	}
	fw, err := Create(path, infos, md)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range ts {
		if err := fw.WriteTensor(x.info.Name, x.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := fw.Close(); err != nil {
		t.Fatal(err)
	}
}

func checkSample(t *testing.T, src tensor.Source, ts []testTensor) {
	t.Helper()
	got := src.Tensors()
	if len(got) != len(ts) {
		t.Fatalf("got %d tensors, want %d", len(got), len(ts))
	}
	for i, x := range ts {
		if !reflect.DeepEqual(got[i], x.info) {
			t.Errorf("tensor %d: got %+v, want %+v", i, got[i], x.info)
		}
		b, err := src.ReadRaw(x.info.Name, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, x.data) && !(len(b) == 0 && len(x.data) == 0) {
			t.Errorf("%s: raw %v, want %v", x.info.Name, b, x.data)
		}
		if x.info.DType.IsFloat() {
			want, _ := tensor.ToFloat32(x.info.DType, x.data, x.info.NumElements(), nil)
			f, err := src.ReadFloat32(x.info.Name, make([]float32, 1, 100))
			if err != nil {
				t.Fatal(err)
			}
			if len(f) != len(want) || (len(f) > 0 && !reflect.DeepEqual(f, want)) {
				t.Errorf("%s: float32 %v, want %v", x.info.Name, f, want)
			}
		} else if _, err := src.ReadFloat32(x.info.Name, nil); !errors.Is(err, tensor.ErrUnsupportedDType) {
			t.Errorf("%s: ReadFloat32 err %v, want ErrUnsupportedDType", x.info.Name, err)
		}
	}
	if _, err := src.ReadRaw("nope", nil); !errors.Is(err, tensor.ErrNotFound) {
		t.Errorf("missing tensor: %v", err)
	}
}

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a.safetensors")
	ts := sampleTensors()
	md := map[string]string{"format": "pt", "x": "y"}
	writeSample(t, path, ts, md)

	b, _ := os.ReadFile(path)
	hlen := binary.LittleEndian.Uint64(b)
	if hlen%8 != 0 || b[8] != '{' {
		t.Errorf("header length %d not aligned or bad start", hlen)
	}

	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	checkSample(t, f, ts)
	if !reflect.DeepEqual(f.Metadata(), md) {
		t.Errorf("metadata %v", f.Metadata())
	}
	as := f.Assets()
	if len(as) != 1 || as[0].Name != MetadataAssetName {
		t.Fatalf("assets %v", as)
	}
	var md2 map[string]string
	if err := json.Unmarshal(as[0].Data, &md2); err != nil || !reflect.DeepEqual(md2, md) {
		t.Errorf("metadata asset %s", as[0].Data)
	}

	// Copy with WriteFile: metadata is carried over from the asset.
	path2 := filepath.Join(dir, "b.safetensors")
	if err := WriteFile(path2, f, nil); err != nil {
		t.Fatal(err)
	}
	b2, _ := os.ReadFile(path2)
	if !bytes.Equal(b, b2) {
		t.Errorf("WriteFile copy differs from original")
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 2 {
		t.Errorf("temporary files left: %v", ents)
	}
}

func TestStorageOrder(t *testing.T) {
	// Header lists tensors out of storage order.
	hdr := `{"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`
	f, err := NewReader("t", bytes.NewReader(raw(hdr, f32bytes(1, 2))), int64(len(raw(hdr, f32bytes(1, 2)))))
	if err != nil {
		t.Fatal(err)
	}
	if ts := f.Tensors(); ts[0].Name != "a" || ts[1].Name != "b" {
		t.Errorf("order %v", ts)
	}
	v, err := f.ReadFloat32("b", nil)
	if err != nil || v[0] != 2 {
		t.Errorf("b = %v, %v", v, err)
	}
}

func TestWriterErrors(t *testing.T) {
	a := tensor.Info{Name: "a", DType: tensor.F32, Shape: []int64{1}, Size: 4}
	b := tensor.Info{Name: "b", DType: tensor.F32, Shape: []int64{2}, Size: 8}
	for _, tc := range []struct {
		name  string
		infos []tensor.Info
	}{
		{"dup", []tensor.Info{a, a}},
		{"size", []tensor.Info{{Name: "a", DType: tensor.F32, Shape: []int64{2}, Size: 4}}},
		{"quant", []tensor.Info{{Name: "a", DType: tensor.Q4_0, Shape: []int64{32}, Size: 18}}},
		{"meta", []tensor.Info{{Name: "__metadata__", DType: tensor.F32, Shape: []int64{1}, Size: 4}}},
		{"empty", []tensor.Info{{Name: "", DType: tensor.F32, Shape: []int64{1}, Size: 4}}},
		{"neg", []tensor.Info{{Name: "a", DType: tensor.F32, Shape: []int64{-1}, Size: 4}}},
	} {
		if _, err := NewWriter(&bytes.Buffer{}, tc.infos, nil); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
	var buf bytes.Buffer
	w, err := NewWriter(&buf, []tensor.Info{a, b}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteTensor("b", make([]byte, 8)); !errors.Is(err, ErrWriter) {
		t.Errorf("out of order: %v", err)
	}
	if err := w.WriteTensor("a", make([]byte, 3)); !errors.Is(err, ErrWriter) {
		t.Errorf("wrong size: %v", err)
	}
	if err := w.WriteTensor("a", make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); !errors.Is(err, ErrWriter) {
		t.Errorf("close with missing tensor: %v", err)
	}

	// A failed FileWriter leaves nothing behind.
	dir := t.TempDir()
	fw, err := Create(filepath.Join(dir, "x.safetensors"), []tensor.Info{a}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := fw.Close(); err == nil {
		t.Error("close without tensors succeeded")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("files left: %v", ents)
	}
}

func TestHostile(t *testing.T) {
	d8 := make([]byte, 8)
	hugeLen := make([]byte, 16)
	binary.LittleEndian.PutUint64(hugeLen, 1<<62)
	tooLong := make([]byte, 16)
	binary.LittleEndian.PutUint64(tooLong, 9)
	for _, tc := range []struct {
		name string
		data []byte
		is   error
		msg  string
	}{
		{"short", []byte{1, 2, 3}, ErrCorrupt, "shorter"},
		{"huge header", hugeLen, ErrHeaderTooLarge, "limit"},
		{"header beyond file", tooLong, ErrHeaderTooLarge, "file size"},
		{"not object", raw(`["a"]`, nil), ErrCorrupt, "'{'"},
		{"invalid json", raw(`{"a":{"dtype":"F32",`, nil), ErrCorrupt, "tensor \"a\""},
		{"trailing", raw(`{} x`, nil), ErrCorrupt, "trailing"},
		{"unknown dtype", raw(`{"a":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}}`, d8), tensor.ErrUnsupportedDType, `tensor "a"`},
		{"negative dim", raw(`{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}`, d8), tensor.ErrShape, `tensor "a"`},
		{"size mismatch", raw(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, d8), tensor.ErrShape, `tensor "a"`},
		{"out of range", raw(`{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}`, d8), ErrCorrupt, `tensor "a"`},
		{"reversed", raw(`{"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}`, d8), ErrCorrupt, `tensor "a"`},
		{"negative offset", raw(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}`, d8), ErrCorrupt, `tensor "a"`},
		{"three offsets", raw(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}`, d8), ErrCorrupt, `tensor "a"`},
		{"overlap", raw(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, d8), ErrCorrupt, "overlap"},
		{"duplicate", raw(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, d8), ErrCorrupt, "duplicate"},
		{"missing field", raw(`{"a":{"dtype":"F32","shape":[1]}}`, d8), ErrCorrupt, `tensor "a"`},
		{"null shape", raw(`{"a":{"dtype":"F32","shape":null,"data_offsets":[0,4]}}`, d8), ErrCorrupt, `tensor "a"`},
		{"float dim", raw(`{"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}`, d8), ErrCorrupt, `tensor "a"`},
		{"huge dims", raw(`{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}}`, d8), tensor.ErrShape, `tensor "a"`},
		{"rank", raw(`{"a":{"dtype":"F32","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,4]}}`, d8), tensor.ErrShape, `tensor "a"`},
		{"bad metadata", raw(`{"__metadata__":{"a":1}}`, nil), ErrCorrupt, "__metadata__"},
		{"entry not object", raw(`{"a":3}`, nil), ErrCorrupt, `tensor "a"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewReader("model.safetensors", bytes.NewReader(tc.data), int64(len(tc.data)))
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, tc.is) {
				t.Errorf("error %q does not wrap %v", err, tc.is)
			}
			if !strings.HasPrefix(err.Error(), "safetensors: model.safetensors: ") || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q lacks file name or %q", err, tc.msg)
			}
		})
	}
	// The same through Open on a real file.
	p := filepath.Join(t.TempDir(), "bad.safetensors")
	os.WriteFile(p, hugeLen, 0o644)
	if _, err := Open(p); !errors.Is(err, ErrHeaderTooLarge) {
		t.Errorf("Open: %v", err)
	}
}

func TestSharded(t *testing.T) {
	dir := t.TempDir()
	ts := sampleTensors()
	writeSample(t, filepath.Join(dir, "model-00002-of-00002.safetensors"), ts[5:], map[string]string{"format": "pt"})
	writeSample(t, filepath.Join(dir, "model-00001-of-00002.safetensors"), ts[:5], map[string]string{"format": "pt", "k": "v"})
	wm := map[string]string{}
	for i, x := range ts {
		if i < 5 {
			wm[x.info.Name] = "model-00001-of-00002.safetensors"
		} else {
			wm[x.info.Name] = "model-00002-of-00002.safetensors"
		}
	}
	writeIndex := func(wm map[string]string) {
		b, _ := json.Marshal(map[string]any{"metadata": map[string]any{"total_size": 123}, "weight_map": wm})
		if err := os.WriteFile(filepath.Join(dir, IndexFileName), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeIndex(wm)
	os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"model_type":"x"}`), 0o644)
	os.WriteFile(filepath.Join(dir, "tokenizer.json"), []byte(`{}`), 0o644)

	for _, p := range []string{dir, filepath.Join(dir, IndexFileName)} {
		m, err := OpenPath(p)
		if err != nil {
			t.Fatal(err)
		}
		checkSample(t, m, ts)
		var names []string
		for _, a := range m.Assets() {
			names = append(names, a.Name)
		}
		if want := []string{"config.json", "tokenizer.json", MetadataAssetName}; !reflect.DeepEqual(names, want) {
			t.Errorf("assets %v, want %v", names, want)
		}
		if string(m.Assets()[0].Data) != `{"model_type":"x"}` {
			t.Errorf("config %s", m.Assets()[0].Data)
		}
		if len(m.Shards()) != 2 {
			t.Errorf("%d shards", len(m.Shards()))
		}
		if err := m.Close(); err != nil {
			t.Error(err)
		}
	}

	// A single shard through OpenPath also gets the sibling assets.
	m, err := OpenPath(filepath.Join(dir, "model-00002-of-00002.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	checkSample(t, m, ts[5:])
	if len(m.Assets()) != 3 {
		t.Errorf("assets %v", m.Assets())
	}
	m.Close()

	// Hostile indexes.
	bad := func(name string, wm map[string]string, want string) {
		t.Helper()
		writeIndex(wm)
		_, err := OpenIndex(filepath.Join(dir, IndexFileName))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want %q", name, err, want)
		}
	}
	wm2 := map[string]string{"w.f32": "model-00002-of-00002.safetensors"}
	bad("wrong shard", wm2, "not stored there")
	bad("escape", map[string]string{"w.f32": "../x.safetensors"}, "not a file inside")
	bad("abs", map[string]string{"w.f32": "/etc/passwd"}, "not a file inside")
	bad("missing shard", map[string]string{"w.f32": "nope.safetensors"}, "nope.safetensors")
	os.WriteFile(filepath.Join(dir, IndexFileName), []byte(`{"weight_map": 3}`), 0o644)
	if _, err := OpenIndex(filepath.Join(dir, IndexFileName)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("bad json: %v", err)
	}
	os.WriteFile(filepath.Join(dir, IndexFileName), []byte(`{}`), 0o644)
	if _, err := OpenIndex(filepath.Join(dir, IndexFileName)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("no weight_map: %v", err)
	}

	// The same tensor in two shards.
	dir2 := t.TempDir()
	writeSample(t, filepath.Join(dir2, "a.safetensors"), ts[:2], nil)
	writeSample(t, filepath.Join(dir2, "b.safetensors"), ts[1:3], nil)
	b, _ := json.Marshal(map[string]any{"weight_map": map[string]string{"w.f32": "a.safetensors", "w.bf16": "b.safetensors"}})
	os.WriteFile(filepath.Join(dir2, "x.safetensors.index.json"), b, 0o644)
	if _, err := OpenDir(dir2); err == nil || !strings.Contains(err.Error(), "stored in both") {
		t.Errorf("duplicate across shards: %v", err)
	}
	if _, err := OpenDir(t.TempDir()); err == nil {
		t.Error("empty dir: no error")
	}
}

func FuzzOpen(f *testing.F) {
	f.Add(raw(`{"__metadata__":{"a":"b"},"x":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},"y":{"dtype":"BF16","shape":[1,1],"data_offsets":[4,6]}}`, make([]byte, 6)))
	f.Add(raw(`{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}  `, f32bytes(1)))
	f.Add(raw(`{"x":{"dtype":"F64","shape":[],"data_offsets":[0,8]},"z":{"dtype":"I8","shape":[0],"data_offsets":[8,8]}}`, make([]byte, 8)))
	f.Add(raw(`{}`, nil))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		sf, err := NewReader("fuzz.safetensors", bytes.NewReader(data), int64(len(data)))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "safetensors: fuzz.safetensors: ") {
				t.Fatalf("error without file name: %v", err)
			}
			return
		}
		var buf []byte
		var fbuf []float32
		for _, ti := range sf.Tensors() {
			if err := tensor.CheckShape(ti.DType, ti.Shape, ti.Size); err != nil {
				t.Fatalf("accepted bad tensor %+v: %v", ti, err)
			}
			buf, err = sf.ReadRaw(ti.Name, buf)
			if err != nil {
				t.Fatal(err)
			}
			if ti.DType.IsFloat() {
				if fbuf, err = sf.ReadFloat32(ti.Name, fbuf); err != nil {
					t.Fatal(err)
				}
			}
		}
		// What was read can be written again and read back identically.
		var out bytes.Buffer
		w, err := NewWriter(&out, sf.Tensors(), sf.Metadata())
		if err != nil {
			t.Fatal(err)
		}
		for _, ti := range sf.Tensors() {
			b, _ := sf.ReadRaw(ti.Name, nil)
			if err := w.WriteTensor(ti.Name, b); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		sf2, err := NewReader("again", bytes.NewReader(out.Bytes()), int64(out.Len()))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(sf2.Tensors(), sf.Tensors()) {
			t.Fatalf("rewrite changed tensors: %v vs %v", sf2.Tensors(), sf.Tensors())
		}
	})
}
