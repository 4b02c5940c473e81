// Package gguf reads GGUF model files (llama.cpp's format, versions 2 and 3)
// as a tensor.Source.
//
// Opening a file reads and validates its header only (metadata and tensor
// infos); tensors are read on demand with ReadAt, so ReadRaw and ReadFloat32
// may be called concurrently. Every count, length and offset in the header is
// checked against the file size before anything is allocated, so hostile or
// damaged files give errors (wrapping ErrBadMagic, ErrVersion or ErrCorrupt),
// never panics or huge allocations.
//
// GGUF lists tensor dimensions fastest-varying first; tensor.Info.Shape holds
// them reversed (slowest first, PyTorch order). The bytes are the same.
package gguf

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"sync/atomic"

	"github.com/nwc-project/nwc/loader/tensor"
)

// Sentinel errors; the reader wraps them with the file name and the problem.
var (
	ErrBadMagic = errors.New("not a GGUF file (bad magic)")
	ErrVersion  = tensor.Kind("unsupported GGUF version", tensor.ErrUnsupported)
	ErrCorrupt  = tensor.Kind("corrupt GGUF file", tensor.ErrCorrupt)
)

// Magic is the first four bytes of a GGUF file.
const Magic = "GGUF"

// DefaultAlignment is the tensor data alignment when general.alignment is absent.
const DefaultAlignment = 32

// MetadataAsset is the name of the asset that carries the metadata as JSON.
const MetadataAsset = "gguf-metadata.json"

// Limits on header fields, on top of the file-size checks.
const (
	maxTensors    = 1 << 24
	maxKV         = 1 << 24
	maxStringLen  = 1 << 30 // one string
	maxNameLen    = 1 << 16 // keys and tensor names
	maxArrayDepth = 16
	maxAlignment  = 1 << 30
)

// TensorInfo is the GGUF-specific description of one tensor.
type TensorInfo struct {
	tensor.Info
	// Type is the stored GGML type (Info.DType is tensor.Invalid when nwc
	// cannot read that type).
	Type GGMLType
	// Dims as stored in the file, fastest-varying first.
	Dims []int64
	// Offset of the data relative to the start of the data section.
	Offset int64
}

// File is an open GGUF file.
type File struct {
	name      string
	r         io.ReaderAt
	closer    io.Closer
	size      int64
	version   uint32
	alignment int64
	dataStart int64
	kvs       []KV
	kvIndex   map[string]int
	tensors   []TensorInfo
	infos     []tensor.Info
	index     map[string]int
	closed    atomic.Bool
}

var _ tensor.Source = (*File)(nil)

// Open opens and validates the GGUF file at path.
func Open(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("gguf: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("gguf: %w", err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("gguf: %s: not a regular file", path)
	}
	g, err := NewReader(f, st.Size(), path)
	if err != nil {
		f.Close()
		return nil, err
	}
	g.closer = f
	return g, nil
}

// NewReader reads a GGUF file of size bytes from r; name is used in errors.
// Close does not close r.
func NewReader(r io.ReaderAt, size int64, name string) (*File, error) {
	g := &File{name: name, r: r, size: size}
	if err := g.parse(); err != nil {
		return nil, err
	}
	return g, nil
}

// parser reads the header sequentially and tracks the file position.
type parser struct {
	br   *bufio.Reader
	pos  int64
	size int64
	buf  [8]byte
	what string // what is being read, for truncation errors
	name string
}

func (p *parser) errf(format string, args ...any) error {
	return fmt.Errorf("gguf: %s: "+format+": %w", append(append([]any{p.name}, args...), ErrCorrupt)...)
}

func (p *parser) remaining() int64 { return p.size - p.pos }

func (p *parser) read(b []byte) error {
	if int64(len(b)) > p.remaining() {
		return p.errf("%s at offset %d: unexpected end of file (size %d)", p.what, p.pos, p.size)
	}
	n, err := io.ReadFull(p.br, b)
	p.pos += int64(n)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return p.errf("%s at offset %d: unexpected end of file", p.what, p.pos)
		}
		return fmt.Errorf("gguf: %s: reading %s: %w", p.name, p.what, err)
	}
	return nil
}

func (p *parser) u8() (uint8, error) {
	err := p.read(p.buf[:1])
	return p.buf[0], err
}

func (p *parser) u16() (uint16, error) {
	err := p.read(p.buf[:2])
	return binary.LittleEndian.Uint16(p.buf[:2]), err
}

func (p *parser) u32() (uint32, error) {
	err := p.read(p.buf[:4])
	return binary.LittleEndian.Uint32(p.buf[:4]), err
}

func (p *parser) u64() (uint64, error) {
	err := p.read(p.buf[:8])
	return binary.LittleEndian.Uint64(p.buf[:8]), err
}

// str reads a length-prefixed string of at most limit bytes.
func (p *parser) str(limit int64) (string, error) {
	start := p.pos
	n, err := p.u64()
	if err != nil {
		return "", err
	}
	if n > uint64(limit) {
		return "", p.errf("%s at offset %d: string length %d exceeds the limit %d", p.what, start, n, limit)
	}
	if int64(n) > p.remaining() {
		return "", p.errf("%s at offset %d: string length %d exceeds the %d bytes left in the file", p.what, start, n, p.remaining())
	}
	b := make([]byte, n)
	if err := p.read(b); err != nil {
		return "", err
	}
	return string(b), nil
}

func (g *File) parse() error {
	if g.size < 0 {
		return fmt.Errorf("gguf: %s: negative size: %w", g.name, ErrCorrupt)
	}
	p := &parser{br: bufio.NewReaderSize(io.NewSectionReader(g.r, 0, g.size), 1<<16), size: g.size, name: g.name}

	p.what = "magic"
	var magic [4]byte
	if g.size < 4 {
		return fmt.Errorf("gguf: %s: file of %d bytes is too short: %w", g.name, g.size, ErrBadMagic)
	}
	if err := p.read(magic[:]); err != nil {
		return err
	}
	if string(magic[:]) != Magic {
		return fmt.Errorf("gguf: %s: magic %q: %w", g.name, magic[:], ErrBadMagic)
	}
	p.what = "version"
	v, err := p.u32()
	if err != nil {
		return err
	}
	g.version = v
	switch {
	case v == 2 || v == 3:
	case v == 1:
		return fmt.Errorf("gguf: %s: version 1 (32-bit counts, pre-2023 files) is not supported, re-convert the model: %w", g.name, ErrVersion)
	case v&0xffff == 0 && bitsSwap(v) <= 3:
		return fmt.Errorf("gguf: %s: big-endian GGUF (version %d byte-swapped) is not supported: %w", g.name, bitsSwap(v), ErrVersion)
	default:
		return fmt.Errorf("gguf: %s: version %d (only 2 and 3 are supported): %w", g.name, v, ErrVersion)
	}

	p.what = "tensor count"
	nt, err := p.u64()
	if err != nil {
		return err
	}
	p.what = "metadata count"
	nkv, err := p.u64()
	if err != nil {
		return err
	}
	// Each tensor info takes at least 8+4+4+8 bytes, each KV at least 8+4+1.
	if nt > maxTensors || nt > uint64(p.remaining()/24) {
		return p.errf("tensor count %d is impossible for a file of %d bytes", nt, g.size)
	}
	if nkv > maxKV || nkv > uint64(p.remaining()/13) {
		return p.errf("metadata count %d is impossible for a file of %d bytes", nkv, g.size)
	}

	g.kvs = make([]KV, 0, nkv)
	g.kvIndex = make(map[string]int, nkv)
	for i := uint64(0); i < nkv; i++ {
		p.what = fmt.Sprintf("metadata key #%d", i)
		key, err := p.str(maxNameLen)
		if err != nil {
			return err
		}
		if _, dup := g.kvIndex[key]; dup {
			return p.errf("duplicate metadata key %q", key)
		}
		p.what = fmt.Sprintf("metadata %q", key)
		t, err := p.u32()
		if err != nil {
			return err
		}
		val, err := p.value(ValueType(t), 0)
		if err != nil {
			return err
		}
		g.kvIndex[key] = len(g.kvs)
		g.kvs = append(g.kvs, KV{Key: key, Value: val})
	}

	g.alignment = DefaultAlignment
	if v, ok := g.Get("general.alignment"); ok {
		a, isU32 := v.V.(uint32)
		if !isU32 {
			return p.errf("general.alignment has type %s, want uint32", v.Type)
		}
		if a == 0 || a&(a-1) != 0 || a > maxAlignment {
			return p.errf("general.alignment %d is not a power of two up to %d", a, maxAlignment)
		}
		g.alignment = int64(a)
	}

	g.tensors = make([]TensorInfo, 0, nt)
	g.index = make(map[string]int, nt)
	for i := uint64(0); i < nt; i++ {
		ti, err := p.tensorInfo(i)
		if err != nil {
			return err
		}
		if _, dup := g.index[ti.Name]; dup {
			return p.errf("duplicate tensor name %q", ti.Name)
		}
		g.index[ti.Name] = len(g.tensors)
		g.tensors = append(g.tensors, ti)
	}

	// The data section starts at the next multiple of the alignment.
	g.dataStart = p.pos
	if r := g.dataStart % g.alignment; r != 0 {
		g.dataStart += g.alignment - r
	}
	if nt > 0 && g.dataStart > g.size {
		return p.errf("tensor data section starts at %d, past the end of the file (size %d)", g.dataStart, g.size)
	}
	dataLen := g.size - g.dataStart

	for _, ti := range g.tensors {
		if ti.Offset%g.alignment != 0 {
			return p.errf("tensor %q: data offset %d is not a multiple of the alignment %d", ti.Name, ti.Offset, g.alignment)
		}
		if ti.Offset > dataLen || ti.Size > dataLen-ti.Offset {
			return p.errf("tensor %q: data [%d, %d) exceeds file size %d", ti.Name,
				g.dataStart+ti.Offset, g.dataStart+ti.Offset+ti.Size, g.size)
		}
	}
	// No two tensors may share bytes.
	order := make([]int, len(g.tensors))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool { return g.tensors[order[a]].Offset < g.tensors[order[b]].Offset })
	for k := 1; k < len(order); k++ {
		prev, cur := &g.tensors[order[k-1]], &g.tensors[order[k]]
		if prev.Offset+prev.Size > cur.Offset && prev.Size > 0 && cur.Size > 0 {
			return p.errf("tensors %q [%d, %d) and %q [%d, %d) overlap", prev.Name,
				g.dataStart+prev.Offset, g.dataStart+prev.Offset+prev.Size,
				cur.Name, g.dataStart+cur.Offset, g.dataStart+cur.Offset+cur.Size)
		}
	}

	g.infos = make([]tensor.Info, len(g.tensors))
	for i, ti := range g.tensors {
		g.infos[i] = ti.Info
	}
	return nil
}

func bitsSwap(v uint32) uint32 {
	return v>>24 | (v>>8)&0xff00 | (v<<8)&0xff0000 | v<<24
}

func (p *parser) tensorInfo(i uint64) (TensorInfo, error) {
	var ti TensorInfo
	p.what = fmt.Sprintf("tensor info #%d", i)
	name, err := p.str(maxNameLen)
	if err != nil {
		return ti, err
	}
	ti.Name = name
	p.what = fmt.Sprintf("tensor %q", name)
	nd, err := p.u32()
	if err != nil {
		return ti, err
	}
	if nd > tensor.MaxRank {
		return ti, p.errf("tensor %q: %d dimensions (at most %d)", name, nd, tensor.MaxRank)
	}
	ti.Dims = make([]int64, nd)
	for d := range ti.Dims {
		n, err := p.u64()
		if err != nil {
			return ti, err
		}
		if n > uint64(tensor.MaxElements) {
			return ti, p.errf("tensor %q: dimension %d is %d", name, d, n)
		}
		ti.Dims[d] = int64(n)
	}
	t, err := p.u32()
	if err != nil {
		return ti, err
	}
	ti.Type = GGMLType(t)
	off, err := p.u64()
	if err != nil {
		return ti, err
	}
	if off > uint64(p.size) {
		return ti, p.errf("tensor %q: data offset %d exceeds file size %d", name, off, p.size)
	}
	ti.Offset = int64(off)

	ti.Shape = make([]int64, nd)
	for d := range ti.Dims {
		ti.Shape[int(nd)-1-d] = ti.Dims[d]
	}
	n := tensor.NumElements(ti.Shape)
	if n < 0 {
		return ti, fmt.Errorf("gguf: %s: tensor %q: dims %v have more than %d elements: %w: %w", p.name, name, ti.Dims, tensor.MaxElements, ErrCorrupt, tensor.ErrShape)
	}
	size, err := ti.Type.storageBytes(n)
	if err != nil {
		if errors.Is(err, tensor.ErrUnsupportedDType) {
			return ti, p.errf("tensor %q: unknown ggml type %d", name, t)
		}
		return ti, fmt.Errorf("gguf: %s: tensor %q: %w: %w", p.name, name, ErrCorrupt, err)
	}
	ti.Size = size
	ti.DType = ti.Type.DType()
	if ti.DType != tensor.Invalid {
		if err := tensor.CheckShape(ti.DType, ti.Shape, ti.Size); err != nil {
			return ti, fmt.Errorf("gguf: %s: tensor %q: %w: %w", p.name, name, ErrCorrupt, err)
		}
	}
	return ti, nil
}

// value reads a value of type t.
func (p *parser) value(t ValueType, depth int) (Value, error) {
	v := Value{Type: t}
	var err error
	switch t {
	case ValueUint8:
		var x uint8
		x, err = p.u8()
		v.V = x
	case ValueInt8:
		var x uint8
		x, err = p.u8()
		v.V = int8(x)
	case ValueUint16:
		var x uint16
		x, err = p.u16()
		v.V = x
	case ValueInt16:
		var x uint16
		x, err = p.u16()
		v.V = int16(x)
	case ValueUint32:
		var x uint32
		x, err = p.u32()
		v.V = x
	case ValueInt32:
		var x uint32
		x, err = p.u32()
		v.V = int32(x)
	case ValueFloat32:
		var x uint32
		x, err = p.u32()
		v.V = math.Float32frombits(x)
	case ValueBool:
		var x uint8
		x, err = p.u8()
		if err == nil && x > 1 {
			return v, p.errf("%s: bool value %d", p.what, x)
		}
		v.V = x == 1
	case ValueString:
		var s string
		s, err = p.str(maxStringLen)
		v.V = s
	case ValueUint64:
		var x uint64
		x, err = p.u64()
		v.V = x
	case ValueInt64:
		var x uint64
		x, err = p.u64()
		v.V = int64(x)
	case ValueFloat64:
		var x uint64
		x, err = p.u64()
		v.V = math.Float64frombits(x)
	case ValueArray:
		return p.array(depth)
	default:
		return v, p.errf("%s: unknown value type %d", p.what, uint32(t))
	}
	return v, err
}

func (p *parser) array(depth int) (Value, error) {
	v := Value{Type: ValueArray}
	if depth >= maxArrayDepth {
		return v, p.errf("%s: arrays nested deeper than %d", p.what, maxArrayDepth)
	}
	start := p.pos
	et, err := p.u32()
	if err != nil {
		return v, err
	}
	v.Elem = ValueType(et)
	if !v.Elem.Valid() {
		return v, p.errf("%s: array of unknown value type %d", p.what, et)
	}
	n64, err := p.u64()
	if err != nil {
		return v, err
	}
	// Minimal encoded size of one element: strings 8 (length), arrays 12
	// (type + length).
	minSize := valueSizes[v.Elem]
	switch v.Elem {
	case ValueString:
		minSize = 8
	case ValueArray:
		minSize = 12
	}
	if n64 > uint64(p.remaining()/minSize) {
		return v, p.errf("%s at offset %d: array of %d %s needs at least %d bytes, %d left in the file",
			p.what, start, n64, v.Elem, satMul(n64, uint64(minSize)), p.remaining())
	}
	n := int(n64)
	if v.Elem == ValueString {
		a := make([]string, n)
		for i := range a {
			if a[i], err = p.str(maxStringLen); err != nil {
				return v, err
			}
		}
		v.V = a
		return v, nil
	}
	if v.Elem == ValueArray {
		a := make([]Value, n)
		for i := range a {
			if a[i], err = p.array(depth + 1); err != nil {
				return v, err
			}
		}
		v.V = a
		return v, nil
	}
	// Fixed-size elements: read in chunks.
	es := int(minSize)
	switch v.Elem {
	case ValueUint8:
		a := make([]uint8, n)
		err = p.read(a)
		v.V = a
		return v, err
	case ValueInt8:
		a := make([]int8, n)
		err = p.chunks(n, es, func(i int, b []byte) { a[i] = int8(b[0]) })
		v.V = a
	case ValueUint16:
		a := make([]uint16, n)
		err = p.chunks(n, es, func(i int, b []byte) { a[i] = binary.LittleEndian.Uint16(b) })
		v.V = a
	case ValueInt16:
		a := make([]int16, n)
		err = p.chunks(n, es, func(i int, b []byte) { a[i] = int16(binary.LittleEndian.Uint16(b)) })
		v.V = a
	case ValueUint32:
		a := make([]uint32, n)
		err = p.chunks(n, es, func(i int, b []byte) { a[i] = binary.LittleEndian.Uint32(b) })
		v.V = a
	case ValueInt32:
		a := make([]int32, n)
		err = p.chunks(n, es, func(i int, b []byte) { a[i] = int32(binary.LittleEndian.Uint32(b)) })
		v.V = a
	case ValueFloat32:
		a := make([]float32, n)
		err = p.chunks(n, es, func(i int, b []byte) { a[i] = math.Float32frombits(binary.LittleEndian.Uint32(b)) })
		v.V = a
	case ValueBool:
		a := make([]bool, n)
		bad := -1
		err = p.chunks(n, es, func(i int, b []byte) {
			if b[0] > 1 && bad < 0 {
				bad = int(b[0])
			}
			a[i] = b[0] == 1
		})
		if err == nil && bad >= 0 {
			return v, p.errf("%s: bool value %d in array", p.what, bad)
		}
		v.V = a
	case ValueUint64:
		a := make([]uint64, n)
		err = p.chunks(n, es, func(i int, b []byte) { a[i] = binary.LittleEndian.Uint64(b) })
		v.V = a
	case ValueInt64:
		a := make([]int64, n)
		err = p.chunks(n, es, func(i int, b []byte) { a[i] = int64(binary.LittleEndian.Uint64(b)) })
		v.V = a
	case ValueFloat64:
		a := make([]float64, n)
		err = p.chunks(n, es, func(i int, b []byte) { a[i] = math.Float64frombits(binary.LittleEndian.Uint64(b)) })
		v.V = a
	}
	return v, err
}

// chunks reads n elements of es bytes and hands each to set.
func (p *parser) chunks(n, es int, set func(i int, b []byte)) error {
	const chunk = 1 << 14
	buf := make([]byte, min(n, chunk)*es)
	for i := 0; i < n; {
		k := min(n-i, chunk)
		b := buf[:k*es]
		if err := p.read(b); err != nil {
			return err
		}
		for j := 0; j < k; j++ {
			set(i+j, b[j*es:(j+1)*es])
		}
		i += k
	}
	return nil
}

func satMul(a, b uint64) uint64 {
	if b != 0 && a > math.MaxUint64/b {
		return math.MaxUint64
	}
	return a * b
}

// Name returns the name the file was opened with.
func (g *File) Name() string { return g.name }

// Version returns the GGUF version (2 or 3).
func (g *File) Version() uint32 { return g.version }

// Alignment returns the data alignment (general.alignment or 32).
func (g *File) Alignment() int64 { return g.alignment }

// DataOffset returns the file offset of the tensor data section.
func (g *File) DataOffset() int64 { return g.dataStart }

// Tensors lists the tensors in file order. For tensors of GGML types nwc
// cannot read, DType is tensor.Invalid (see TensorInfos for the GGML type).
func (g *File) Tensors() []tensor.Info { return g.infos }

// TensorInfos lists the tensors with their GGUF details.
func (g *File) TensorInfos() []TensorInfo { return g.tensors }

// TensorInfo returns the GGUF details of the named tensor.
func (g *File) TensorInfo(name string) (TensorInfo, bool) {
	i, ok := g.index[name]
	if !ok {
		return TensorInfo{}, false
	}
	return g.tensors[i], true
}

// Metadata returns all key/value pairs in file order.
func (g *File) Metadata() []KV { return g.kvs }

// Get returns the value of key.
func (g *File) Get(key string) (Value, bool) {
	i, ok := g.kvIndex[key]
	if !ok {
		return Value{}, false
	}
	return g.kvs[i].Value, true
}

// GetString returns a string value.
func (g *File) GetString(key string) (string, bool) {
	v, ok := g.Get(key)
	if !ok {
		return "", false
	}
	return v.Str()
}

// GetUint returns an integer value (any width, non-negative) as uint64.
func (g *File) GetUint(key string) (uint64, bool) {
	v, ok := g.Get(key)
	if !ok {
		return 0, false
	}
	return v.Uint()
}

// GetInt returns an integer value (any width) as int64.
func (g *File) GetInt(key string) (int64, bool) {
	v, ok := g.Get(key)
	if !ok {
		return 0, false
	}
	return v.Int()
}

// GetFloat returns a float32 or float64 value as float64.
func (g *File) GetFloat(key string) (float64, bool) {
	v, ok := g.Get(key)
	if !ok {
		return 0, false
	}
	return v.Float()
}

// GetBool returns a bool value.
func (g *File) GetBool(key string) (bool, bool) {
	v, ok := g.Get(key)
	if !ok {
		return false, false
	}
	return v.Bool()
}

// GetStrings returns an array of strings.
func (g *File) GetStrings(key string) ([]string, bool) {
	v, ok := g.Get(key)
	if !ok {
		return nil, false
	}
	return v.Strings()
}

// Assets returns the metadata as the JSON asset MetadataAsset (see
// MarshalMetadataJSON).
func (g *File) Assets() []tensor.Asset {
	data, err := MarshalMetadataJSON(g.kvs)
	if err != nil {
		// Values come from the parser and always have consistent types.
		return nil
	}
	return []tensor.Asset{{Name: MetadataAsset, Data: data}}
}

// ReadRaw returns the stored bytes of the named tensor.
func (g *File) ReadRaw(name string, dst []byte) ([]byte, error) {
	if g.closed.Load() {
		return nil, fmt.Errorf("gguf: %s: read of %q after Close", g.name, name)
	}
	i, ok := g.index[name]
	if !ok {
		return nil, fmt.Errorf("gguf: %s: %q: %w", g.name, name, tensor.ErrNotFound)
	}
	ti := &g.tensors[i]
	if int64(cap(dst)) < ti.Size {
		dst = make([]byte, ti.Size)
	}
	dst = dst[:ti.Size]
	off := g.dataStart + ti.Offset
	n, err := g.r.ReadAt(dst, off)
	if n == len(dst) {
		return dst, nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("gguf: %s: tensor %q: data [%d, %d): short read (%d bytes): %w", g.name, name, off, off+ti.Size, n, ErrCorrupt)
	}
	return nil, fmt.Errorf("gguf: %s: tensor %q: %w", g.name, name, err)
}

// ReadFloat32 returns the named tensor converted to float32.
func (g *File) ReadFloat32(name string, dst []float32) ([]float32, error) {
	if ti, ok := g.TensorInfo(name); ok && !ti.DType.IsFloat() {
		return nil, fmt.Errorf("gguf: %s: tensor %q: ggml type %s: %w", g.name, name, ti.Type, tensor.ErrUnsupportedDType)
	}
	return tensor.ReadFloat32(g, "gguf: "+g.name, name, dst)
}

// Close closes the file (when opened with Open).
func (g *File) Close() error {
	if g.closed.Swap(true) {
		return nil
	}
	if g.closer != nil {
		return g.closer.Close()
	}
	return nil
}
