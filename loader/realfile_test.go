package loader_test

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nwc-project/nwc/internal/ortenv/orttest"
	"github.com/nwc-project/nwc/loader"
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
		nf, err := loader.OpenNWC(tmp)
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
			if err == nil || !strings.Contains(err.Error(), quoted) {
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
