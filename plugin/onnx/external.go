package onnx

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"unsafe"

	"google.golang.org/protobuf/proto"

	"github.com/nwc-project/nwc/plugin/onnx/onnxpb"
)

// ExternalSink stores initializer data outside the model protobuf (ONNX
// external data). WriteData appends data and returns where it went: a
// location (a file name relative to the folder ONNX Runtime is told to read
// external data from) and the byte offset in it.
type ExternalSink interface {
	WriteData(name string, data []byte) (location string, offset int64, err error)
}

// ExternalAlign is the alignment of every tensor's offset in an
// ExternalFile: a page, so that ONNX Runtime can map the data in place.
const ExternalAlign = 4096

// ExternalFile is an ExternalSink writing one file, each tensor at an
// ExternalAlign-aligned offset.
type ExternalFile struct {
	f    *os.File
	name string // location: the file's base name
	off  int64
}

// CreateExternalFile creates (truncates) the file name in dir.
func CreateExternalFile(dir, name string) (*ExternalFile, error) {
	if name == "" || filepath.Base(name) != name {
		return nil, fmt.Errorf("onnx: external data file name %q must be a plain file name", name)
	}
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		return nil, fmt.Errorf("onnx: external data: %w", err)
	}
	return &ExternalFile{f: f, name: name}, nil
}

// WriteData implements ExternalSink.
func (e *ExternalFile) WriteData(_ string, data []byte) (string, int64, error) {
	if e.f == nil {
		return "", 0, fmt.Errorf("onnx: external data file %s: %w", e.name, os.ErrClosed)
	}
	if pad := (ExternalAlign - e.off%ExternalAlign) % ExternalAlign; pad > 0 {
		if _, err := e.f.Write(make([]byte, pad)); err != nil {
			return "", 0, fmt.Errorf("onnx: external data: %w", err)
		}
		e.off += pad
	}
	off := e.off
	if _, err := e.f.Write(data); err != nil {
		return "", 0, fmt.Errorf("onnx: external data: %w", err)
	}
	e.off += int64(len(data))
	return e.name, off, nil
}

// Size returns the bytes written so far (padding included).
func (e *ExternalFile) Size() int64 { return e.off }

// Path returns the file's path.
func (e *ExternalFile) Path() string { return e.f.Name() }

// Close closes the file (the data stays).
func (e *ExternalFile) Close() error {
	if e.f == nil {
		return nil
	}
	err := e.f.Close()
	e.f = nil
	if err != nil {
		return fmt.Errorf("onnx: external data: %w", err)
	}
	return nil
}

// DiscardSink is an ExternalSink that keeps nothing: it only lays the data
// out as ExternalFile would (for size accounting and tests).
type DiscardSink struct{ Size int64 }

// WriteData implements ExternalSink.
func (d *DiscardSink) WriteData(_ string, data []byte) (string, int64, error) {
	d.Size += (ExternalAlign - d.Size%ExternalAlign) % ExternalAlign
	off := d.Size
	d.Size += int64(len(data))
	_, _ = io.Discard.Write(data)
	return "discard", off, nil
}

// SetExternal makes the graph store the data of every initializer of at
// least minBytes bytes in sink instead of the protobuf (nil: embed
// everything, the default). Sink errors are reported by Err and Marshal.
func (g *Graph) SetExternal(sink ExternalSink, minBytes int) {
	g.ext, g.extMin = sink, minBytes
}

// Err returns the first error of an external sink (nil when none).
func (g *Graph) Err() error { return g.err }

// EmbeddedBytes is the initializer data held in the protobuf; ExternalBytes
// the data written to the external sink.
func (g *Graph) EmbeddedBytes() int64 { return g.embedded }

// ExternalBytes is the initializer data written to the external sink.
func (g *Graph) ExternalBytes() int64 { return g.external }

// bytesView returns the little-endian bytes of data: a view of its memory
// on little-endian machines (no copy), else a copy.
func bytesView[T float32 | uint16](data []T) []byte {
	size := int(unsafe.Sizeof(data[0:1][0]))
	if len(data) == 0 {
		return nil
	}
	if littleEndian {
		return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(data))), size*len(data))
	}
	raw := make([]byte, size*len(data))
	for i, v := range data {
		switch x := any(v).(type) {
		case float32:
			binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(x))
		case uint16:
			binary.LittleEndian.PutUint16(raw[2*i:], x)
		}
	}
	return raw
}

// addData adds an initializer of type elem whose little-endian bytes are
// raw (copied when embedded: raw may be a view of the caller's slice; a
// sink must not keep it either).
func (g *Graph) addData(name string, elem int32, shape []int64, raw []byte) string {
	t := &onnxpb.TensorProto{Name: proto.String(name), DataType: proto.Int32(elem), Dims: append([]int64{}, shape...)}
	if g.ext != nil && len(raw) >= g.extMin && len(raw) > 0 {
		loc, off, err := g.ext.WriteData(name, raw)
		if err != nil && g.err == nil {
			g.err = fmt.Errorf("onnx: initializer %s: %w", name, err)
		}
		g.external += int64(len(raw))
		t.DataLocation = onnxpb.TensorProto_EXTERNAL.Enum()
		t.ExternalData = []*onnxpb.StringStringEntryProto{
			{Key: proto.String("location"), Value: proto.String(loc)},
			{Key: proto.String("offset"), Value: proto.String(strconv.FormatInt(off, 10))},
			{Key: proto.String("length"), Value: proto.String(strconv.Itoa(len(raw)))},
		}
	} else {
		t.RawData = append([]byte(nil), raw...) // counted by Initializer
	}
	return g.Initializer(t)
}

// ErrTooLarge is wrapped by Marshal's error for a model over MaxModelBytes.
var ErrTooLarge = errors.New("onnx: model over protobuf's 2 GB limit")
