package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nwc-project/nwc/loader/safetensors"
	"github.com/nwc-project/nwc/loader/tensor"
)

// capture runs f with os.Stdout redirected and returns what it printed.
func capture(t *testing.T, f func() error) (string, error) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = w
	done := make(chan []byte)
	go func() { b, _ := io.ReadAll(r); done <- b }()
	ferr := f()
	w.Close()
	os.Stdout = old
	return string(<-done), ferr
}

func writeModel(t *testing.T, path string) map[string][]byte {
	infos := []tensor.Info{
		{Name: "model.layers.0.mlp.up_proj.weight", DType: tensor.F32, Shape: []int64{8, 256}, Size: 4 * 8 * 256},
		{Name: "model.norm.weight", DType: tensor.BF16, Shape: []int64{16}, Size: 32},
	}
	data := map[string][]byte{}
	for i, ti := range infos {
		b := make([]byte, ti.Size)
		for j := 0; j < len(b)/4; j++ {
			binary.LittleEndian.PutUint32(b[4*j:], math.Float32bits(float32(math.Sin(float64(j*(i+3))))))
		}
		data[ti.Name] = b
	}
	w, err := safetensors.Create(path, infos, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, ti := range infos {
		if err := w.WriteTensor(ti.Name, data[ti.Name]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return data
}

func TestCLICompressInspectDecompress(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "m.safetensors")
	data := writeModel(t, in)
	ctx := context.Background()
	nwc := filepath.Join(dir, "m.nwc")
	out, err := capture(t, func() error {
		return runCompress(ctx, []string{"--model", in, "--codec", "lossless", "-o", nwc, "--json"})
	})
	if err != nil {
		t.Fatal(err)
	}
	var sum struct {
		BitsPerWeight float64 `json:"bits_per_weight"`
		FileBytes     int64   `json:"file_bytes"`
	}
	if err := json.Unmarshal([]byte(out), &sum); err != nil || sum.FileBytes == 0 {
		t.Fatalf("compress --json: %v %q", err, out)
	}
	out, err = capture(t, func() error { return runInspect(ctx, []string{nwc, "--json", "--verify"}) })
	if err != nil {
		t.Fatal(err)
	}
	var rep inspectReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Format != "nwc" || rep.TensorCount != 2 || !rep.Verified || rep.Weights != 8*256+16 {
		t.Fatalf("inspect: %+v", rep)
	}
	st, _ := os.Stat(nwc)
	if rep.FileBytes != st.Size() || math.Abs(rep.FileBitsPerWeight-8*float64(st.Size())/float64(rep.Weights)) > 1e-9 {
		t.Fatalf("inspect bits/weight not from the file size: %+v", rep)
	}
	back := filepath.Join(dir, "back.safetensors")
	if _, err := capture(t, func() error { return runDecompress(ctx, []string{nwc, "-o", back, "-q"}) }); err != nil {
		t.Fatal(err)
	}
	f, err := safetensors.Open(back)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for name, want := range data {
		got, err := f.ReadRaw(name, nil)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s: not bit-identical (%v)", name, err)
		}
	}
	// RTN: the block linear is coded lossy, the norm stays exact.
	rtn := filepath.Join(dir, "r.nwc")
	if _, err := capture(t, func() error {
		return runCompress(ctx, []string{"--model", in, "--codec", "rtn-g128", "--bits", "3", "-o", rtn, "-q"})
	}); err != nil {
		t.Fatal(err)
	}
	out, _ = capture(t, func() error { return runInspect(ctx, []string{rtn, "--json"}) })
	if !strings.Contains(out, `"codec": "rtn"`) {
		t.Fatalf("rtn codec not used: %s", out)
	}
}

func TestCLIErrors(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.nwc")
	os.WriteFile(bad, []byte("\x89NWC\r\n\x1a\n truncated"), 0o644)
	_, err := capture(t, func() error { return runInspect(ctx, []string{bad}) })
	if err == nil || !strings.Contains(err.Error(), "bad.nwc") {
		t.Fatalf("truncated .nwc: %v", err)
	}
	_, err = capture(t, func() error { return runCompress(ctx, []string{"--model", bad}) })
	if !errors.Is(err, errUsage) {
		t.Fatalf("missing -o: %v", err)
	}
	_, err = capture(t, func() error {
		return runCompress(ctx, []string{"--model", bad, "--codec", "nope", "-o", filepath.Join(dir, "x.nwc")})
	})
	if err == nil {
		t.Fatal("bad input accepted")
	}
}
