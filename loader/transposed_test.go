package loader_test

import (
	"context"
	"math"
	"path/filepath"
	"testing"

	"github.com/nwc-project/nwc/loader"
	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/tensor"
)

// TestReadFloat32T: for every 2-D tensor of the tiny files (nwc-coded,
// gain-coded, rtn-coded, lossless), ReadFloat32T directly and through a
// Prefetcher that prefetches it transposed is exactly the transpose of
// ReadFloat32.
func TestReadFloat32T(t *testing.T) {
	for _, file := range []string{"tiny-gain.nwc", "tiny-rtn.nwc", "tiny-nwc.nwc"} {
		path := filepath.Join("..", "plugin", "testdata", file)
		nf, err := loader.OpenNWC(path, codec.Env{})
		if err != nil {
			t.Fatal(err)
		}
		isMatrix := func(name string) bool {
			ti, _ := tensor.Find(nf.Tensors(), name)
			return len(ti.Shape) == 2
		}
		pf := loader.Prefetch(context.Background(), nf, false, loader.PrefetchOptions{Transposed: isMatrix})
		defer nf.Close()
		defer pf.Close()
		n := 0
		for _, ti := range nf.Tensors() {
			if len(ti.Shape) != 2 {
				continue
			}
			w, err := nf.ReadFloat32(ti.Name, nil)
			if err != nil {
				if file == "tiny-nwc.nwc" {
					t.Skipf("%s: %v (needs ONNX Runtime)", file, err)
				}
				t.Fatal(err)
			}
			rows, cols := int(ti.Shape[0]), int(ti.Shape[1])
			want := tensor.Transpose(w, rows, cols, nil)
			for _, src := range []tensor.TransposedReader{nf, pf} {
				got, err := src.ReadFloat32T(ti.Name, nil)
				if err != nil {
					t.Fatalf("%s %s: %v", file, ti.Name, err)
				}
				if len(got) != len(want) {
					t.Fatalf("%s %s: %d values, want %d", file, ti.Name, len(got), len(want))
				}
				for i := range want {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						t.Fatalf("%s %s (%T): transposed value %d = %v, want %v", file, ti.Name, src, i, got[i], want[i])
					}
				}
			}
			n++
		}
		if n == 0 {
			t.Fatalf("%s: no matrix", file)
		}
	}
}
