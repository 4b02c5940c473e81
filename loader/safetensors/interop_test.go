package safetensors

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestPythonInterop checks files against the reference Python implementation.
// It runs only when NWC_PYTHON names a Python with the safetensors and numpy
// packages, e.g.
//
//	python3 -m venv /tmp/st && /tmp/st/bin/pip install safetensors numpy
//	NWC_PYTHON=/tmp/st/bin/python go test ./loader/safetensors -run Interop
func TestPythonInterop(t *testing.T) {
	py := os.Getenv("NWC_PYTHON")
	if py == "" {
		t.Skip("NWC_PYTHON not set")
	}
	dir := t.TempDir()
	goFile := filepath.Join(dir, "go.safetensors")
	pyFile := filepath.Join(dir, "py.safetensors")
	ts := sampleTensors()
	writeSample(t, goFile, ts, map[string]string{"format": "pt"})
	script := `
import json, sys
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file
out = {}
with safe_open(sys.argv[1], framework="np") as f:
    meta = f.metadata()
    for k in f.keys():
        sl = f.get_slice(k)
        if sl.get_dtype() == "BF16":  # numpy has no bfloat16
            out[k] = {"shape": sl.get_shape(), "dtype": "BF16", "bytes": "skip"}
            continue
        t = f.get_tensor(k)
        out[k] = {"shape": list(t.shape), "dtype": str(t.dtype), "bytes": t.tobytes().hex()}
save_file({
    "b": np.arange(6, dtype=np.float32).reshape(2, 3),
    "a": np.array([1.5, -2.0], dtype=np.float16),
    "c": np.array([[True, False]]),
    "d": np.array(7, dtype=np.int64),
}, sys.argv[2], metadata={"k": "v"})
print(json.dumps({"meta": meta, "tensors": out}))
`
	cmd := exec.Command(py, "-c", script, goFile, pyFile)
	cmd.Stderr = os.Stderr
	outb, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		Meta    map[string]string
		Tensors map[string]struct {
			Shape []int64
			Dtype string
			Bytes string
		}
	}
	if err := json.Unmarshal(outb, &res); err != nil {
		t.Fatal(err)
	}
	if res.Meta["format"] != "pt" {
		t.Errorf("python metadata %v", res.Meta)
	}
	if len(res.Tensors) != len(ts) {
		t.Fatalf("python read %d tensors, want %d", len(res.Tensors), len(ts))
	}
	for _, x := range ts {
		got, ok := res.Tensors[x.info.Name]
		if !ok {
			t.Errorf("python lacks %q", x.info.Name)
			continue
		}
		if got.Bytes == "skip" {
			got.Bytes = hexString(x.data)
		}
		if want := hexString(x.data); got.Bytes != want || len(got.Shape) != len(x.info.Shape) {
			t.Errorf("%s: python read %+v, want bytes %s shape %v", x.info.Name, got, want, x.info.Shape)
		}
	}

	f, err := Open(pyFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Metadata()["k"] != "v" || len(f.Tensors()) != 4 {
		t.Fatalf("go read %v %v", f.Metadata(), f.Tensors())
	}
	v, err := f.ReadFloat32("b", nil)
	if err != nil || len(v) != 6 || v[5] != 5 {
		t.Errorf("b = %v %v", v, err)
	}
	v, err = f.ReadFloat32("a", nil)
	if err != nil || v[0] != 1.5 || v[1] != -2 {
		t.Errorf("a = %v %v", v, err)
	}
	t.Logf("python tensors in storage order: %v", f.Tensors())
}

func hexString(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}
