// Package safetensors reads and writes the safetensors format of Hugging Face
// (https://github.com/huggingface/safetensors): an 8-byte little-endian header
// length, a JSON header that maps tensor names to dtype, shape and data offsets
// (plus an optional "__metadata__" string map), then the tensor bytes.
//
// Open reads one file; OpenIndex, OpenDir and OpenPath read sharded
// checkpoints (model.safetensors.index.json) and collect the model assets that
// lie next to the weights. All readers read only the header when opening and
// then one tensor per Read call, with ReadAt, so they are safe for concurrent
// use. Every header field is validated: a corrupt or hostile file yields an
// error (wrapping ErrCorrupt, tensor.ErrUnsupportedDType or tensor.ErrShape),
// never a panic or a huge allocation.
package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/nwc-project/nwc/loader/tensor"
)

// MaxHeaderSize bounds the JSON header of a file (the reference
// implementation uses the same 100 MB limit).
const MaxHeaderSize = 100_000_000

// MetadataAssetName is the name of the asset that carries the "__metadata__"
// map of a file, encoded as a JSON object.
const MetadataAssetName = "safetensors-metadata.json"

var (
	// ErrCorrupt: the file or index is not valid safetensors.
	ErrCorrupt = tensor.Kind("corrupt safetensors data", tensor.ErrCorrupt)
	// ErrHeaderTooLarge: the header length exceeds MaxHeaderSize or the file.
	// It wraps ErrCorrupt.
	ErrHeaderTooLarge = fmt.Errorf("%w: header too large", ErrCorrupt)
	// ErrClosed: the file was closed.
	ErrClosed = errors.New("safetensors: file closed")
)

// dtypeNames maps safetensors dtype strings to tensor dtypes.
var dtypeNames = map[string]tensor.DType{
	"F32":  tensor.F32,
	"F16":  tensor.F16,
	"BF16": tensor.BF16,
	"F64":  tensor.F64,
	"I8":   tensor.I8,
	"I16":  tensor.I16,
	"I32":  tensor.I32,
	"I64":  tensor.I64,
	"U8":   tensor.U8,
	"BOOL": tensor.Bool,
}

// DTypeName returns the safetensors name of dt, or false if safetensors cannot
// store it (the GGML block-quantized types).
func DTypeName(dt tensor.DType) (string, bool) {
	for s, d := range dtypeNames {
		if d == dt {
			return s, true
		}
	}
	return "", false
}

// File is one open .safetensors file. It implements tensor.Source.
type File struct {
	name      string // base name, for errors
	r         io.ReaderAt
	closer    io.Closer
	dataStart int64
	infos     []tensor.Info
	index     map[string]int // position in infos
	offsets   []int64        // absolute file offset of each tensor
	metadata  map[string]string
	assets    []tensor.Asset
}

var _ tensor.Source = (*File)(nil)

// Open opens a .safetensors file and reads its header. Its Assets hold only
// the "__metadata__" map (as MetadataAssetName) when the file has one; use
// OpenPath to also collect config.json and the tokenizer files next to it.
func Open(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("safetensors: %s: not a regular file", path)
	}
	sf, err := newFile(filepath.Base(path), f, st.Size())
	if err != nil {
		f.Close()
		return nil, err
	}
	sf.closer = f
	return sf, nil
}

// NewReader reads the header of safetensors data of the given size from r.
// name is used in error messages. The caller keeps r open as long as the File
// is used; File.Close does not close it.
func NewReader(name string, r io.ReaderAt, size int64) (*File, error) {
	return newFile(name, r, size)
}

type rawInfo struct {
	Dtype       *string  `json:"dtype"`
	Shape       *[]int64 `json:"shape"`
	DataOffsets *[]int64 `json:"data_offsets"`
}

func newFile(name string, r io.ReaderAt, size int64) (*File, error) {
	errf := func(format string, args ...any) error {
		return fmt.Errorf("safetensors: %s: "+format, append([]any{name}, args...)...)
	}
	if size < 8 {
		return nil, errf("%w: file of %d bytes is shorter than the 8-byte header length", ErrCorrupt, size)
	}
	var lenBuf [8]byte
	if n, err := r.ReadAt(lenBuf[:], 0); err != nil && n != len(lenBuf) {
		return nil, errf("reading header length: %w", err)
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	if n > MaxHeaderSize {
		return nil, errf("%w: header length %d exceeds the limit %d", ErrHeaderTooLarge, n, MaxHeaderSize)
	}
	if int64(n) > size-8 {
		return nil, errf("%w: header length %d exceeds the file size %d", ErrHeaderTooLarge, n, size)
	}
	if n < 2 {
		return nil, errf("%w: header length %d is too small", ErrCorrupt, n)
	}
	hdr := make([]byte, n)
	if n, err := r.ReadAt(hdr, 8); err != nil && n != len(hdr) {
		return nil, errf("reading header: %w", err)
	}
	if hdr[0] != '{' {
		return nil, errf("%w: header does not start with '{'", ErrCorrupt)
	}
	dataStart := 8 + int64(n)
	dataLen := size - dataStart

	sf := &File{
		name:      name,
		r:         r,
		dataStart: dataStart,
		index:     make(map[string]int),
	}
	type entry struct {
		info       tensor.Info
		begin, end int64
		pos        int
	}
	var entries []entry
	seen := make(map[string]bool)

	dec := json.NewDecoder(bytes.NewReader(hdr))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return nil, errf("%w: header is not a JSON object", ErrCorrupt)
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, errf("%w: invalid header JSON: %v", ErrCorrupt, err)
		}
		key, ok := tok.(string)
		if !ok {
			return nil, errf("%w: invalid header JSON", ErrCorrupt)
		}
		if seen[key] {
			if key == "__metadata__" {
				return nil, errf("%w: duplicate __metadata__", ErrCorrupt)
			}
			return nil, errf("%w: tensor %q: duplicate name", ErrCorrupt, key)
		}
		seen[key] = true
		if key == "__metadata__" {
			var md map[string]string
			if err := dec.Decode(&md); err != nil {
				return nil, errf("%w: __metadata__ is not a map of strings: %v", ErrCorrupt, err)
			}
			sf.metadata = md
			continue
		}
		terr := func(format string, args ...any) error {
			return errf("tensor %q: "+format, append([]any{key}, args...)...)
		}
		var ri rawInfo
		if err := dec.Decode(&ri); err != nil {
			return nil, terr("%w: invalid header entry: %v", ErrCorrupt, err)
		}
		if ri.Dtype == nil || ri.Shape == nil || ri.DataOffsets == nil {
			return nil, terr("%w: entry needs dtype, shape and data_offsets", ErrCorrupt)
		}
		if key == "" {
			return nil, terr("%w: empty tensor name", ErrCorrupt)
		}
		dt, ok := dtypeNames[*ri.Dtype]
		if !ok {
			return nil, terr("%w: %q", tensor.ErrUnsupportedDType, *ri.Dtype)
		}
		shape := *ri.Shape
		if shape == nil {
			shape = []int64{}
		}
		for _, d := range shape {
			if d < 0 {
				return nil, terr("%w: negative dimension in %v", tensor.ErrShape, shape)
			}
		}
		offs := *ri.DataOffsets
		if len(offs) != 2 {
			return nil, terr("%w: data_offsets must hold 2 values, has %d", ErrCorrupt, len(offs))
		}
		begin, end := offs[0], offs[1]
		if begin < 0 || end < begin {
			return nil, terr("%w: invalid data_offsets [%d, %d]", ErrCorrupt, begin, end)
		}
		if end > dataLen {
			return nil, terr("%w: data_offsets [%d, %d] exceed the %d data bytes", ErrCorrupt, begin, end, dataLen)
		}
		if err := tensor.CheckShape(dt, shape, end-begin); err != nil {
			return nil, terr("%w", err)
		}
		entries = append(entries, entry{
			info:  tensor.Info{Name: key, DType: dt, Shape: shape, Size: end - begin},
			begin: begin, end: end, pos: len(entries),
		})
	}
	if _, err := dec.Token(); err != nil { // closing '}'
		return nil, errf("%w: invalid header JSON: %v", ErrCorrupt, err)
	}
	// Only whitespace (the alignment padding) may follow the object.
	if len(bytes.TrimLeft(hdr[dec.InputOffset():], " \t\r\n")) != 0 {
		return nil, errf("%w: trailing data after the header JSON", ErrCorrupt)
	}

	// Storage order; reject overlapping ranges.
	sort.SliceStable(entries, func(i, j int) bool {
		if entries[i].begin != entries[j].begin {
			return entries[i].begin < entries[j].begin
		}
		return entries[i].end < entries[j].end
	})
	prevEnd := int64(0)
	prevName := ""
	sf.infos = make([]tensor.Info, len(entries))
	sf.offsets = make([]int64, len(entries))
	for i, e := range entries {
		if e.begin < prevEnd {
			return nil, errf("tensor %q: %w: data_offsets [%d, %d] overlap tensor %q", e.info.Name, ErrCorrupt, e.begin, e.end, prevName)
		}
		if e.end > prevEnd {
			prevEnd, prevName = e.end, e.info.Name
		}
		sf.infos[i] = e.info
		sf.offsets[i] = dataStart + e.begin
		sf.index[e.info.Name] = i
	}
	if len(sf.metadata) > 0 {
		b, err := json.Marshal(sf.metadata)
		if err != nil {
			return nil, errf("encoding metadata: %w", err)
		}
		sf.assets = append(sf.assets, tensor.Asset{Name: MetadataAssetName, Data: b})
	}
	return sf, nil
}

// Name returns the base name of the file.
func (f *File) Name() string { return f.name }

// Tensors lists the tensors in storage order (by data offset).
func (f *File) Tensors() []tensor.Info { return f.infos }

// Assets returns the "__metadata__" map as MetadataAssetName, if non-empty.
func (f *File) Assets() []tensor.Asset { return f.assets }

// Metadata returns the "__metadata__" map of the header (nil if absent).
func (f *File) Metadata() map[string]string { return f.metadata }

// ReadRaw returns the stored bytes of the named tensor, reusing dst when it is
// large enough.
func (f *File) ReadRaw(name string, dst []byte) ([]byte, error) {
	i, ok := f.index[name]
	if !ok {
		return nil, fmt.Errorf("safetensors: %s: tensor %q: %w", f.name, name, tensor.ErrNotFound)
	}
	ti, off := f.infos[i], f.offsets[i]
	if int64(cap(dst)) < ti.Size {
		dst = make([]byte, ti.Size)
	}
	dst = dst[:ti.Size]
	if len(dst) == 0 {
		return dst, nil
	}
	if n, err := f.r.ReadAt(dst, off); err != nil && n != len(dst) {
		if errors.Is(err, os.ErrClosed) {
			err = ErrClosed
		}
		return nil, fmt.Errorf("safetensors: %s: tensor %q: %w", f.name, name, err)
	}
	return dst, nil
}

// ReadFloat32 returns the named tensor converted to float32 (F32, F16, BF16
// and F64 tensors only), reusing dst when it is large enough.
func (f *File) ReadFloat32(name string, dst []float32) ([]float32, error) {
	return tensor.ReadFloat32(f, "safetensors: "+f.name, name, dst)
}

// Close closes the underlying file (if Open opened it).
func (f *File) Close() error {
	if f.closer == nil {
		return nil
	}
	err := f.closer.Close()
	if errors.Is(err, os.ErrClosed) {
		return nil
	}
	return err
}
