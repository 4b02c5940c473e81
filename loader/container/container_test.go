package container

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/nwc-project/nwc/loader/tensor"
)

type sec struct {
	d       Descriptor
	payload []byte
}

func sampleSections() []sec {
	var out []sec
	for i := 0; i < 5; i++ {
		n := int64(3 + i*7)
		payload := make([]byte, 4*n)
		for j := range payload {
			payload[j] = byte(j*31 + i)
		}
		out = append(out, sec{Descriptor{Kind: KindTensor, Name: fmt.Sprintf("blk.%d.w", i), DType: tensor.F32,
			Shape: []int64{n}, Codec: 0, RawSize: 4 * n}, payload})
	}
	out = append(out, sec{Descriptor{Kind: KindAsset, Name: "config.json", DType: tensor.U8, Shape: []int64{2},
		Codec: 0, Params: []byte{1, 2, 3}, RawSize: 2}, []byte("{}")})
	return out
}

func buildContainer(t testing.TB, secs []sec) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range secs {
		if err := w.WriteSection(s.d, s.payload); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestRoundTrip(t *testing.T) {
	secs := sampleSections()
	b := buildContainer(t, secs)
	if len(b)%Align != trailerSize%Align {
		t.Fatalf("file length %d not aligned", len(b))
	}
	r, err := NewReader(bytes.NewReader(b), int64(len(b)), "mem.nwc")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Verify(); err != nil {
		t.Fatal(err)
	}
	if len(r.Entries()) != len(secs) {
		t.Fatalf("%d entries, want %d", len(r.Entries()), len(secs))
	}
	for i, s := range secs {
		e, err := r.Lookup(s.d.Kind, s.d.Name)
		if err != nil {
			t.Fatal(err)
		}
		if e.PayloadOffset%Align != 0 {
			t.Errorf("%s: payload offset %d not aligned", s.d.Name, e.PayloadOffset)
		}
		p, err := r.ReadPayload(e)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(p, s.payload) {
			t.Errorf("section %d payload differs", i)
		}
		if !bytes.Equal(e.Params, s.d.Params) || e.RawSize != s.d.RawSize || e.Shape[0] != s.d.Shape[0] {
			t.Errorf("section %d descriptor differs: %+v", i, e.Descriptor)
		}
	}
	if _, err := r.Lookup(KindTensor, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("lookup of missing tensor: %v", err)
	}
}

func TestEmptyContainer(t *testing.T) {
	b := buildContainer(t, nil)
	r, err := NewReader(bytes.NewReader(b), int64(len(b)), "empty.nwc")
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Entries()) != 0 || r.Verify() != nil {
		t.Fatal("empty container")
	}
}

// errInconsistent marks a reader that contradicts itself (Verify accepts a
// section that ReadPayload rejects, or a payload of the wrong size): a bug,
// never a property of the input.
var errInconsistent = errors.New("reader inconsistent")

// readAll opens b with the random-access reader and reads it the way a
// loader does: Verify, then ReadPayload of every entry. It returns the first
// error.
func readAll(b []byte, name string) error {
	r, err := NewReader(bytes.NewReader(b), int64(len(b)), name)
	if err != nil {
		return err
	}
	verr := r.Verify()
	for _, e := range r.Entries() {
		p, err := r.ReadPayload(e)
		if err != nil {
			if verr == nil {
				return fmt.Errorf("%w: Verify passed but ReadPayload of %s %q failed: %v", errInconsistent, e.Kind, e.Name, err)
			}
			continue
		}
		if int64(len(p)) != e.PayloadSize {
			return fmt.Errorf("%w: %s: %s %q: payload of %d bytes, descriptor says %d", errInconsistent, name, e.Kind, e.Name, len(p), e.PayloadSize)
		}
	}
	return verr
}

// Every single flipped byte anywhere in the file must be detected by the
// random-access reader (NewReader + Verify), and a flip inside a section must
// be detected by ReadPayload of that section alone, so reading one tensor
// never returns corrupted bytes.
func TestEveryByteFlipDetected(t *testing.T) {
	b := buildContainer(t, sampleSections())
	ref, err := NewReader(bytes.NewReader(b), int64(len(b)), "ref.nwc")
	if err != nil {
		t.Fatal(err)
	}
	for pos := 0; pos < len(b); pos++ {
		for _, mask := range []byte{0x01, 0x80, 0xff} {
			c := append([]byte(nil), b...)
			c[pos] ^= mask
			err := readAll(c, "flip.nwc")
			if errors.Is(err, errInconsistent) {
				t.Fatal(err)
			}
			if err == nil {
				t.Fatalf("flip %#x at byte %d of %d not detected by Verify", mask, pos, len(b))
			}
			if !bytes.Contains([]byte(err.Error()), []byte("flip.nwc")) {
				t.Fatalf("error does not name the file: %v", err)
			}
			r, err := NewReader(bytes.NewReader(c), int64(len(c)), "flip.nwc")
			if err != nil {
				continue // caught by the preamble, index or trailer checks
			}
			for _, e := range ref.Entries() {
				if int64(pos) < e.SectionOffset || int64(pos) >= e.PayloadOffset+e.PayloadSize+4 {
					continue
				}
				if _, err := r.ReadPayload(e); err == nil {
					t.Fatalf("flip %#x at byte %d (inside %s %q) not detected by ReadPayload", mask, pos, e.Kind, e.Name)
				}
			}
		}
	}
}

// Every truncation must be detected when the container is opened, from a
// file (Open) as well as from memory (NewReader).
func TestTruncationDetected(t *testing.T) {
	b := buildContainer(t, sampleSections())
	path := filepath.Join(t.TempDir(), "trunc.nwc")
	for n := 0; n < len(b); n++ {
		c := b[:n]
		if _, err := NewReader(bytes.NewReader(c), int64(n), "trunc.nwc"); err == nil {
			t.Fatalf("truncation to %d bytes not detected", n)
		}
		if err := readAll(c, "trunc.nwc"); err == nil {
			t.Fatalf("truncation to %d bytes not detected by Verify", n)
		}
		if err := os.WriteFile(path, c, 0o644); err != nil {
			t.Fatal(err)
		}
		if r, err := Open(path); err == nil {
			r.Close()
			t.Fatalf("truncation to %d bytes not detected by Open", n)
		}
	}
}

func TestVersionAndMagic(t *testing.T) {
	b := buildContainer(t, sampleSections())
	c := append([]byte(nil), b...)
	c[8] = 2 // major version 2, fix up the crc so only the version is wrong
	putCRC(c)
	if _, err := NewReader(bytes.NewReader(c), int64(len(c)), "v2.nwc"); !errors.Is(err, ErrVersion) {
		t.Fatalf("version 2: %v", err)
	}
	c = append([]byte(nil), b...)
	copy(c, "GGUF")
	if _, err := NewReader(bytes.NewReader(c), int64(len(c)), "x.nwc"); !errors.Is(err, ErrBadMagic) {
		t.Fatalf("bad magic: %v", err)
	}
}

func putCRC(c []byte) {
	s := crc(c[:60])
	c[60], c[61], c[62], c[63] = byte(s), byte(s>>8), byte(s>>16), byte(s>>24)
}

func TestWriterRejects(t *testing.T) {
	w, _ := NewWriter(io.Discard)
	bad := []Descriptor{
		{Kind: 9, Name: "x", DType: tensor.U8, Shape: []int64{1}, RawSize: 1},
		{Kind: KindTensor, Name: "", DType: tensor.U8, Shape: []int64{1}, RawSize: 1},
		{Kind: KindTensor, Name: "x", DType: tensor.F32, Shape: []int64{3}, RawSize: 4},
		{Kind: KindTensor, Name: "x", DType: 200, Shape: []int64{1}, RawSize: 1},
	}
	for i, d := range bad {
		if err := w.WriteSection(d, nil); err == nil {
			t.Errorf("descriptor %d accepted", i)
		}
	}
	ok := Descriptor{Kind: KindTensor, Name: "x", DType: tensor.U8, Shape: []int64{1}, RawSize: 1}
	if err := w.WriteSection(ok, []byte{1}); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteSection(ok, []byte{1}); err == nil {
		t.Error("duplicate name accepted")
	}
}

func TestCreateAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "m.nwc")
	w, err := Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w.WriteSection(sampleSections()[0].d, sampleSections()[0].payload)
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatal("target exists before Close")
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.Verify(); err != nil {
		t.Fatal(err)
	}
	w2, _ := Create(filepath.Join(dir, "n.nwc"))
	w2.Abort()
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("leftover files after Abort: %v", ents)
	}
}

func FuzzReader(f *testing.F) {
	b := buildContainer(f, sampleSections())
	f.Add(b)
	f.Add(b[:len(b)/2])
	f.Add(buildContainer(f, nil))
	f.Fuzz(func(t *testing.T, data []byte) {
		// Must never panic or allocate without bound; whatever Verify
		// accepts, every ReadPayload must accept too.
		err := readAll(data, "fuzz.nwc")
		if errors.Is(err, errInconsistent) {
			t.Fatal(err)
		}
		if err != nil && !bytes.Contains([]byte(err.Error()), []byte("fuzz.nwc")) {
			t.Fatalf("error does not name the file: %v", err)
		}
	})
}
