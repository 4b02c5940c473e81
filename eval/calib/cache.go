//go:build cgo

package calib

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// Cache layout: one directory per collection (CachePath) holding
//
//	meta.json             Hessians as JSON (model key, text, tokens, inputs, ...)
//	blk.<l>.<kind>.h      one file per input (Input.Name): Σ_t x_t x_tᵀ
//	blk.<l>.<kind>.sink.h Σ over windows of x_0 x_0ᵀ (Input.Sink; present
//	                      when meta.json's sink_windows > 0; its tokens
//	                      field is the number of windows)
//
// An .h file is a 32-byte little-endian header and the upper triangle of
// the symmetric H, row by row (H[i][j] for j >= i), as float32:
//
//	0  magic "NWCH"
//	4  version uint32 (FileVersion)
//	8  n uint32
//	12 flags uint32 (0: float32 upper triangle)
//	16 tokens uint64
//	24 crc32c uint32 of bytes 0..23 and the payload
//	28 reserved uint32 (0)
//	32 payload: n(n+1)/2 float32
const (
	fileMagic   = "NWCH"
	FileVersion = 1
	headerSize  = 32
	metaName    = "meta.json"
	// MetaVersion is meta.json's "format".
	MetaVersion = 1
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type meta struct {
	Format  int       `json:"format"`
	Created time.Time `json:"created"`
	*Hessians
}

// fileName is the .h file of an input, sinkFileName its sink statistics.
func fileName(in *Input) string     { return in.Name + ".h" }
func sinkFileName(in *Input) string { return in.Name + ".sink.h" }

// encodeMatrix serialises the symmetric n x n H (the upper triangle is
// stored) summed over tokens tokens.
func encodeMatrix(H []float64, n int, tokens int64) []byte {
	b := make([]byte, headerSize+4*n*(n+1)/2)
	copy(b, fileMagic)
	binary.LittleEndian.PutUint32(b[4:], FileVersion)
	binary.LittleEndian.PutUint32(b[8:], uint32(n))
	binary.LittleEndian.PutUint64(b[16:], uint64(tokens))
	p := headerSize
	for i := 0; i < n; i++ {
		for _, v := range H[i*n+i : (i+1)*n] {
			binary.LittleEndian.PutUint32(b[p:], math.Float32bits(float32(v)))
			p += 4
		}
	}
	crc := crc32.Update(crc32.Checksum(b[:24], castagnoli), castagnoli, b[headerSize:])
	binary.LittleEndian.PutUint32(b[24:], crc)
	return b
}

// decodeMatrix checks and reads an .h file (n and tokens must match
// meta.json's, wantN and wantTokens).
func decodeMatrix(b []byte, wantN int, wantTokens int64) ([]float64, error) {
	if len(b) < headerSize || string(b[:4]) != fileMagic {
		return nil, errors.New("not an nwc H file (bad magic or short header)")
	}
	if v := binary.LittleEndian.Uint32(b[4:]); v != FileVersion {
		return nil, fmt.Errorf("file version %d, want %d", v, FileVersion)
	}
	n := int(binary.LittleEndian.Uint32(b[8:]))
	if n != wantN {
		return nil, fmt.Errorf("n = %d, meta.json says %d", n, wantN)
	}
	if f := binary.LittleEndian.Uint32(b[12:]); f != 0 {
		return nil, fmt.Errorf("unknown flags %#x", f)
	}
	if tk := int64(binary.LittleEndian.Uint64(b[16:])); tk != wantTokens {
		return nil, fmt.Errorf("%d tokens, meta.json says %d", tk, wantTokens)
	}
	if want := headerSize + 4*n*(n+1)/2; len(b) != want {
		return nil, fmt.Errorf("%d bytes, want %d for n = %d", len(b), want, n)
	}
	crc := crc32.Update(crc32.Checksum(b[:24], castagnoli), castagnoli, b[headerSize:])
	if got := binary.LittleEndian.Uint32(b[24:]); got != crc {
		return nil, fmt.Errorf("crc32c %08x, stored %08x", crc, got)
	}
	H := make([]float64, n*n)
	p := headerSize
	for i := 0; i < n; i++ {
		for j := i; j < n; j++ {
			v := float64(math.Float32frombits(binary.LittleEndian.Uint32(b[p:])))
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return nil, fmt.Errorf("H[%d][%d] = %v", i, j, v)
			}
			H[i*n+j], H[j*n+i] = v, v
			p += 4
		}
	}
	return H, nil
}

// Save writes h to dir (created, replacing what was there) through a
// temporary directory beside it renamed into place, so that a reader never
// sees a half-written entry. H is stored in float32. The entry holds the
// plain sums: Save fails once a sink weight has been applied.
func (h *Hessians) Save(dir string) error {
	if len(h.Inputs) == 0 {
		return errors.New("calib: save: no inputs")
	}
	if h.SinkWeight != 0 {
		return fmt.Errorf("calib: save: sink weight %g applied: H is no longer the plain sum", h.SinkWeight)
	}
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("calib: save: %w", err)
	}
	tmp, err := os.MkdirTemp(parent, filepath.Base(dir)+".tmp-"+strconv.Itoa(os.Getpid())+"-")
	if err != nil {
		return fmt.Errorf("calib: save: %w", err)
	}
	defer os.RemoveAll(tmp)
	for _, in := range h.Inputs {
		if len(in.H) != in.N*in.N {
			return fmt.Errorf("calib: save: %s: H has %d values, want %d", in.Name, len(in.H), in.N*in.N)
		}
		if err := os.WriteFile(filepath.Join(tmp, fileName(in)), encodeMatrix(in.H, in.N, in.Tokens), 0o644); err != nil {
			return fmt.Errorf("calib: save: %w", err)
		}
		if h.SinkWindows == 0 {
			continue
		}
		if len(in.Sink) != in.N*in.N {
			return fmt.Errorf("calib: save: %s: sink has %d values, want %d", in.Name, len(in.Sink), in.N*in.N)
		}
		if err := os.WriteFile(filepath.Join(tmp, sinkFileName(in)), encodeMatrix(in.Sink, in.N, int64(h.SinkWindows)), 0o644); err != nil {
			return fmt.Errorf("calib: save: %w", err)
		}
	}
	// meta.json last: an entry without it is incomplete.
	if err := writeMeta(tmp, h); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("calib: save: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		if _, statErr := os.Stat(filepath.Join(dir, metaName)); statErr == nil {
			return nil // another process saved the same entry first
		}
		return fmt.Errorf("calib: save: %w", err)
	}
	h.Path = dir
	return nil
}

// writeMeta writes h's meta.json into dir.
func writeMeta(dir string, h *Hessians) error {
	mj, err := json.MarshalIndent(meta{Format: MetaVersion, Created: time.Now().UTC(), Hessians: h}, "", "  ")
	if err != nil {
		return fmt.Errorf("calib: save: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, metaName), append(mj, '\n'), 0o644); err != nil {
		return fmt.Errorf("calib: save: %w", err)
	}
	return nil
}

// Load reads the statistics saved in dir. A missing entry gives an error
// wrapping os.ErrNotExist; a damaged one (bad JSON, missing or truncated
// file, wrong header, crc mismatch, non-finite value) one wrapping
// ErrCorrupt that names the file.
func Load(dir string) (*Hessians, error) {
	mj, err := os.ReadFile(filepath.Join(dir, metaName))
	if err != nil {
		return nil, fmt.Errorf("calib: load: %w", err)
	}
	m := meta{Hessians: &Hessians{}}
	if err := json.Unmarshal(mj, &m); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, filepath.Join(dir, metaName), err)
	}
	h := m.Hessians
	if m.Format != MetaVersion {
		return nil, fmt.Errorf("%w: %s: format %d, want %d", ErrCorrupt, filepath.Join(dir, metaName), m.Format, MetaVersion)
	}
	if len(h.Inputs) == 0 {
		return nil, fmt.Errorf("%w: %s lists no inputs", ErrCorrupt, filepath.Join(dir, metaName))
	}
	if h.SinkWeight != 0 || h.SinkWindows < 0 || h.SinkWindows > h.Windows {
		return nil, fmt.Errorf("%w: %s: sink weight %g, sink windows %d of %d", ErrCorrupt, filepath.Join(dir, metaName), h.SinkWeight, h.SinkWindows, h.Windows)
	}
	for _, in := range h.Inputs {
		if in == nil || in.N <= 0 || in.N > 1<<16 || filepath.Base(in.Name) != in.Name {
			return nil, fmt.Errorf("%w: %s: bad input entry %+v", ErrCorrupt, filepath.Join(dir, metaName), in)
		}
		if in.H, err = loadMatrix(filepath.Join(dir, fileName(in)), in.N, in.Tokens); err != nil {
			return nil, err
		}
		if h.SinkWindows > 0 {
			if in.Sink, err = loadMatrix(filepath.Join(dir, sinkFileName(in)), in.N, int64(h.SinkWindows)); err != nil {
				return nil, err
			}
		}
	}
	h.Path = dir
	h.index()
	return h, nil
}

// loadMatrix reads one .h file; errors wrap ErrCorrupt and name it.
func loadMatrix(p string, n int, tokens int64) ([]float64, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	H, err := decodeMatrix(b, n, tokens)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, p, err)
	}
	return H, nil
}
