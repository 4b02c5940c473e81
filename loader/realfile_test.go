//go:build cgo

package loader_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nwc-project/nwc/internal/ortenv/orttest"
	"github.com/nwc-project/nwc/loader"
	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/container"
	"github.com/nwc-project/nwc/plugin/llama"
)

// TestRealFileCorruption (NWC_TEST_FILE=path/to/model.nwc; run by
// scripts/check-decode.sh): one byte flipped in the middle of any section of
// a real compressed model (every tensor and asset section, one at a time)
// gives an error at load that names the tensor; through the runtime too.
func TestRealFileCorruption(t *testing.T) {
	path := os.Getenv("NWC_TEST_FILE")
	if path == "" {
		t.Skip("NWC_TEST_FILE not set")
	}
	orttest.Require(t)
	useRepoCodecs(t)
	tmp := filepath.Join(t.TempDir(), filepath.Base(path))
	copyFile(t, path, tmp)
	r, err := container.Open(tmp)
	if err != nil {
		t.Fatal(err)
	}
	entries := r.Entries()
	r.Close()
	f, err := os.OpenFile(tmp, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	flip := func(off int64) {
		var b [1]byte
		if _, err := f.ReadAt(b[:], off); err != nil {
			t.Fatal(err)
		}
		b[0] ^= 0x20
		if _, err := f.WriteAt(b[:], off); err != nil {
			t.Fatal(err)
		}
	}
	runtimeChecked := 0
	for i, e := range entries {
		off := e.PayloadOffset + e.PayloadSize/2
		if i%3 == 1 { // some in the section header instead of the payload
			off = e.SectionOffset + 5
		}
		flip(off)
		quoted := `"` + e.Name + `"`
		nf, err := loader.OpenNWC(tmp, codec.Env{})
		switch {
		case e.Kind == container.KindAsset:
			if err == nil || !strings.Contains(err.Error(), quoted) {
				t.Fatalf("asset %s corrupted at byte %d: open error %v", e.Name, off, err)
			}
		case err != nil:
			t.Fatalf("tensor %s corrupted: open failed early: %v", e.Name, err)
		default:
			_, err = nf.ReadRaw(e.Name, nil)
			nf.Close()
			if err == nil || !strings.Contains(err.Error(), quoted) || !(errors.Is(err, container.ErrChecksum) || errors.Is(err, container.ErrCorrupt)) {
				t.Fatalf("tensor %s corrupted at byte %d: read error %v", e.Name, off, err)
			}
			// Through the runtime, for the first tensors it reads (the
			// embedding, then layer 0): the load stops naming the tensor.
			if strings.HasPrefix(e.Name, "token_embd") || strings.HasPrefix(e.Name, "blk.0.attn_q") {
				_, err := llama.Open(tmp, llama.Options{Threads: 1})
				if err == nil || !strings.Contains(err.Error(), quoted) {
					t.Fatalf("runtime load with %s corrupted: %v", e.Name, err)
				}
				t.Logf("runtime load, %s corrupted: %v", e.Name, err)
				runtimeChecked++
			}
		}
		flip(off)
	}
	if runtimeChecked < 2 {
		t.Fatalf("runtime checked on %d tensors", runtimeChecked)
	}
	t.Logf("%d sections corrupted one at a time: every one named at load", len(entries))
}

// useRepoCodecs points the codec search path at the repository's models/
// (tests run in the package folder) unless NWC_CODECS is set.
func useRepoCodecs(t testing.TB) {
	if os.Getenv("NWC_CODECS") == "" {
		t.Setenv("NWC_CODECS", filepath.Join("..", "models"))
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkRealFileDecode (NWC_TEST_FILE): decoding every tensor of a real
// .nwc file in order, one at a time vs through Prefetch (the load path of
// the runtime and of decompress), side by side.
func BenchmarkRealFileDecode(b *testing.B) {
	path := os.Getenv("NWC_TEST_FILE")
	if path == "" {
		b.Skip("NWC_TEST_FILE not set")
	}
	useRepoCodecs(b)
	for _, ahead := range []int{0, 2, 4} {
		name := "sequential"
		if ahead > 0 {
			name = "prefetch-" + string(rune('0'+ahead))
		}
		b.Run(name, func(b *testing.B) {
			var weights int64
			for i := 0; i < b.N; i++ {
				nf, err := loader.OpenNWC(path, codec.Env{})
				if err != nil {
					b.Fatal(err)
				}
				var src interface {
					ReadFloat32(string, []float32) ([]float32, error)
				} = nf
				var pf *loader.Prefetcher
				if ahead > 0 {
					pf = loader.Prefetch(context.Background(), nf, false, loader.PrefetchOptions{Ahead: ahead})
					src = pf
				}
				weights = 0
				for _, ti := range nf.Tensors() {
					v, err := src.ReadFloat32(ti.Name, nil)
					if err != nil {
						b.Fatal(err)
					}
					weights += int64(len(v))
				}
				if pf != nil {
					pf.Close()
				}
				nf.Close()
			}
			b.ReportMetric(float64(weights)*float64(b.N)/b.Elapsed().Seconds()/1e6, "Mweights/s")
		})
	}
}
