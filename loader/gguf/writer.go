package gguf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/nwc-project/nwc/loader/tensor"
)

// ErrWriter: a Writer was used wrongly (tensor out of order, wrong size,
// missing tensors at Close) or given an invalid header.
var ErrWriter = errors.New("gguf: writer")

// WriterVersion is the GGUF version the Writer writes.
const WriterVersion = 3

// WriteTensor describes one tensor of a GGUF file to be written.
type WriteTensor struct {
	Name string
	Type GGMLType
	// Shape in row-major order, slowest dimension first (tensor.Info order);
	// the file stores it reversed.
	Shape []int64
}

// Layout is the byte layout of a GGUF file: computed from the metadata and
// the tensor list alone, before any tensor data exists.
type Layout struct {
	Alignment  int64
	HeaderSize int64   // bytes before the data section, padding included
	Offsets    []int64 // per tensor, relative to the data section
	Sizes      []int64 // per tensor, in bytes
	FileSize   int64
}

// Writer streams a GGUF file: NewWriter writes the header (metadata and
// tensor infos, whose data offsets are computed up front), then WriteTensor
// takes the tensors' bytes in the declared order, padding each to the
// alignment. Memory use is the header plus what the caller passes in.
type Writer struct {
	w       io.Writer
	tensors []WriteTensor
	layout  Layout
	next    int
	pos     int64 // bytes written so far
	err     error // sticky
	done    bool
}

// Plan validates kvs and tensors and computes the layout of the file they
// make, without writing anything. The alignment is general.alignment when
// kvs hold it (a uint32 power of two), else DefaultAlignment.
func Plan(kvs []KV, tensors []WriteTensor) (Layout, []byte, error) {
	align := int64(DefaultAlignment)
	seen := make(map[string]bool, len(kvs))
	var hdr bytes.Buffer
	hdr.WriteString(Magic)
	putU32(&hdr, WriterVersion)
	putU64(&hdr, uint64(len(tensors)))
	putU64(&hdr, uint64(len(kvs)))
	for _, kv := range kvs {
		if seen[kv.Key] {
			return Layout{}, nil, fmt.Errorf("%w: duplicate metadata key %q", ErrWriter, kv.Key)
		}
		seen[kv.Key] = true
		if err := kv.Value.check(0); err != nil {
			return Layout{}, nil, fmt.Errorf("%w: metadata %q: %v", ErrWriter, kv.Key, err)
		}
		if kv.Key == "general.alignment" {
			a, ok := kv.Value.V.(uint32)
			if !ok || a == 0 || a&(a-1) != 0 || a > maxAlignment {
				return Layout{}, nil, fmt.Errorf("%w: general.alignment must be a uint32 power of two up to %d, got %v", ErrWriter, maxAlignment, kv.Value.V)
			}
			align = int64(a)
		}
		putString(&hdr, kv.Key)
		putU32(&hdr, uint32(kv.Value.Type))
		writeValue(&hdr, kv.Value)
	}
	l := Layout{Alignment: align, Offsets: make([]int64, len(tensors)), Sizes: make([]int64, len(tensors))}
	names := make(map[string]bool, len(tensors))
	var off int64
	for i, t := range tensors {
		if t.Name == "" || len(t.Name) > maxNameLen {
			return Layout{}, nil, fmt.Errorf("%w: invalid tensor name %q", ErrWriter, t.Name)
		}
		if names[t.Name] {
			return Layout{}, nil, fmt.Errorf("%w: duplicate tensor name %q", ErrWriter, t.Name)
		}
		names[t.Name] = true
		if len(t.Shape) == 0 || len(t.Shape) > 4 {
			return Layout{}, nil, fmt.Errorf("%w: tensor %q: %d dimensions (GGUF holds 1 to 4)", ErrWriter, t.Name, len(t.Shape))
		}
		n := int64(1)
		for _, d := range t.Shape {
			if d < 0 || d > tensor.MaxElements || (d > 0 && n > tensor.MaxElements/d) {
				return Layout{}, nil, fmt.Errorf("%w: tensor %q: bad shape %v", ErrWriter, t.Name, t.Shape)
			}
			n *= d
		}
		if ti, ok := ggmlTypes[t.Type]; ok && t.Shape[len(t.Shape)-1]%ti.blockElems != 0 {
			return Layout{}, nil, fmt.Errorf("%w: tensor %q: row of %d elements is not a multiple of the %s block size %d", ErrWriter, t.Name, t.Shape[len(t.Shape)-1], ti.name, ti.blockElems)
		}
		sz, err := t.Type.storageBytes(n)
		if err != nil {
			return Layout{}, nil, fmt.Errorf("%w: tensor %q: %v", ErrWriter, t.Name, err)
		}
		l.Offsets[i], l.Sizes[i] = off, sz
		off = alignUp(off+sz, align)
		putString(&hdr, t.Name)
		putU32(&hdr, uint32(len(t.Shape)))
		for k := len(t.Shape) - 1; k >= 0; k-- {
			putU64(&hdr, uint64(t.Shape[k]))
		}
		putU32(&hdr, uint32(t.Type))
		putU64(&hdr, uint64(l.Offsets[i]))
	}
	for int64(hdr.Len())%align != 0 {
		hdr.WriteByte(0)
	}
	l.HeaderSize = int64(hdr.Len())
	l.FileSize = l.HeaderSize
	if len(tensors) > 0 {
		last := len(tensors) - 1
		l.FileSize += l.Offsets[last] + l.Sizes[last]
	}
	return l, hdr.Bytes(), nil
}

func alignUp(x, a int64) int64 { return (x + a - 1) / a * a }

// NewWriter validates the metadata and tensors (see Plan), writes the header
// to w and returns a Writer that expects the tensors' bytes in that order.
func NewWriter(w io.Writer, kvs []KV, tensors []WriteTensor) (*Writer, error) {
	l, hdr, err := Plan(kvs, tensors)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(hdr); err != nil {
		return nil, fmt.Errorf("gguf: writing header: %w", err)
	}
	return &Writer{w: w, tensors: append([]WriteTensor(nil), tensors...), layout: l, pos: l.HeaderSize}, nil
}

// Layout returns the layout of the file being written.
func (w *Writer) Layout() Layout { return w.layout }

var zeros [4096]byte

// WriteTensor writes the bytes of the next tensor (exactly its size in its
// GGML type), preceded by the padding that aligns it.
func (w *Writer) WriteTensor(name string, raw []byte) error {
	if w.err != nil {
		return w.err
	}
	if w.done {
		return fmt.Errorf("%w: WriteTensor after Close", ErrWriter)
	}
	if w.next >= len(w.tensors) {
		return fmt.Errorf("%w: tensor %q: all declared tensors were already written", ErrWriter, name)
	}
	t := w.tensors[w.next]
	if name != t.Name {
		return fmt.Errorf("%w: tensor %q written out of order, expected %q", ErrWriter, name, t.Name)
	}
	if int64(len(raw)) != w.layout.Sizes[w.next] {
		return fmt.Errorf("%w: tensor %q: %d bytes given, %d declared (%s %v)", ErrWriter, name, len(raw), w.layout.Sizes[w.next], t.Type, t.Shape)
	}
	start := w.layout.HeaderSize + w.layout.Offsets[w.next]
	for w.pos < start {
		n := min(start-w.pos, int64(len(zeros)))
		if _, err := w.w.Write(zeros[:n]); err != nil {
			w.err = fmt.Errorf("gguf: writing padding before tensor %q: %w", name, err)
			return w.err
		}
		w.pos += n
	}
	if _, err := w.w.Write(raw); err != nil {
		w.err = fmt.Errorf("gguf: writing tensor %q: %w", name, err)
		return w.err
	}
	w.pos += int64(len(raw))
	w.next++
	return nil
}

// Close checks that every declared tensor was written. It does not close the
// underlying writer.
func (w *Writer) Close() error {
	if w.err != nil {
		return w.err
	}
	if w.done {
		return nil
	}
	if w.next != len(w.tensors) {
		return fmt.Errorf("%w: %d of %d tensors written, next is %q", ErrWriter, w.next, len(w.tensors), w.tensors[w.next].Name)
	}
	w.done = true
	return nil
}

func putU32(b *bytes.Buffer, v uint32) {
	var x [4]byte
	binary.LittleEndian.PutUint32(x[:], v)
	b.Write(x[:])
}

func putU64(b *bytes.Buffer, v uint64) {
	var x [8]byte
	binary.LittleEndian.PutUint64(x[:], v)
	b.Write(x[:])
}

func putString(b *bytes.Buffer, s string) {
	putU64(b, uint64(len(s)))
	b.WriteString(s)
}

// writeValue encodes a checked value without its type tag.
func writeValue(b *bytes.Buffer, v Value) {
	if v.Type != ValueArray {
		writeScalar(b, v.V)
		return
	}
	putU32(b, uint32(v.Elem))
	putU64(b, uint64(v.Len()))
	switch a := v.V.(type) {
	case []uint8:
		b.Write(a)
	case []int8:
		writeAll(b, a)
	case []uint16:
		writeAll(b, a)
	case []int16:
		writeAll(b, a)
	case []uint32:
		writeAll(b, a)
	case []int32:
		writeAll(b, a)
	case []float32:
		writeAll(b, a)
	case []bool:
		writeAll(b, a)
	case []string:
		writeAll(b, a)
	case []uint64:
		writeAll(b, a)
	case []int64:
		writeAll(b, a)
	case []float64:
		writeAll(b, a)
	case []Value:
		for _, x := range a {
			writeValue(b, x)
		}
	}
}

// writeAll encodes the elements of an array value.
func writeAll[T any](b *bytes.Buffer, a []T) {
	for _, x := range a {
		writeScalar(b, x)
	}
}

func writeScalar(b *bytes.Buffer, v any) {
	switch x := v.(type) {
	case uint8:
		b.WriteByte(x)
	case int8:
		b.WriteByte(byte(x))
	case uint16:
		b.WriteByte(byte(x))
		b.WriteByte(byte(x >> 8))
	case int16:
		b.WriteByte(byte(x))
		b.WriteByte(byte(uint16(x) >> 8))
	case uint32:
		putU32(b, x)
	case int32:
		putU32(b, uint32(x))
	case float32:
		putU32(b, math.Float32bits(x))
	case bool:
		if x {
			b.WriteByte(1)
		} else {
			b.WriteByte(0)
		}
	case string:
		putString(b, x)
	case uint64:
		putU64(b, x)
	case int64:
		putU64(b, uint64(x))
	case float64:
		putU64(b, math.Float64bits(x))
	}
}

// QuantizeQ8_0 quantizes x (a multiple of 32 values) to GGML Q8_0 blocks
// (an fp16 scale d = max|x|/127, then 32 int8 values round(x/d), rounding
// half away from zero), as ggml's quantize_row_q8_0_ref does. It appends to
// dst[:0].
func QuantizeQ8_0(x []float32, dst []byte) ([]byte, error) {
	const qk = 32
	if len(x)%qk != 0 {
		return nil, fmt.Errorf("gguf: Q8_0: %d values is not a multiple of %d: %w", len(x), qk, tensor.ErrShape)
	}
	need := len(x) / qk * 34
	if cap(dst) < need {
		dst = make([]byte, need)
	}
	dst = dst[:need]
	for b := 0; b < len(x)/qk; b++ {
		blk := x[b*qk : (b+1)*qk]
		out := dst[b*34 : (b+1)*34]
		var amax float32
		for _, v := range blk {
			if a := float32(math.Abs(float64(v))); a > amax {
				amax = a
			}
		}
		d := amax / 127
		var id float32
		if d != 0 {
			id = 1 / d
		}
		binary.LittleEndian.PutUint16(out, tensor.F32ToF16(d))
		for j, v := range blk {
			out[2+j] = byte(int8(math.Round(float64(v * id))))
		}
	}
	return dst, nil
}
