// Package container reads and writes the .nwc container (docs/FORMAT.md): a
// preamble, one checksummed section per tensor or asset, an index and a
// trailer. It knows nothing of codecs: payloads are opaque bytes here.
package container

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"unicode/utf8"

	"github.com/nwc-project/nwc/loader/tensor"
)

// Format constants.
const (
	VersionMajor = 1
	VersionMinor = 0

	Align        = 64
	preambleSize = 64
	trailerSize  = 32

	maxNameLen       = 4096
	maxParamsLen     = 1 << 20
	maxDescriptorLen = maxParamsLen + 8<<10
	maxSections      = 1 << 20
)

var (
	preambleMagic = [8]byte{0x89, 'N', 'W', 'C', '\r', '\n', 0x1a, '\n'}
	sectionMagic  = [4]byte{'N', 'W', 'C', 'S'}
	indexMagic    = [4]byte{'N', 'W', 'C', 'I'}
	trailerMagic  = [8]byte{'N', 'W', 'C', 'T', 'R', 'A', 'I', 'L'}
	castagnoli    = crc32.MakeTable(crc32.Castagnoli)
)

// HasMagic reports whether p starts with the magic bytes of a .nwc file.
func HasMagic(p []byte) bool {
	return len(p) >= len(preambleMagic) && bytes.Equal(p[:len(preambleMagic)], preambleMagic[:])
}

// Errors. Every error returned by this package wraps one of these and names
// the file (and section) it concerns.
var (
	ErrBadMagic = errors.New("not a .nwc file (bad magic)")
	ErrVersion  = tensor.Kind("unsupported .nwc version", tensor.ErrUnsupported)
	ErrCorrupt  = tensor.Kind("corrupt .nwc file", tensor.ErrCorrupt)
	ErrChecksum = tensor.Kind("checksum mismatch", tensor.ErrCorrupt)
	ErrNotFound = errors.New("section not found")
)

// Kind says what a section holds.
type Kind uint8

// Section kinds.
const (
	KindTensor Kind = 1
	KindAsset  Kind = 2
)

func (k Kind) String() string {
	switch k {
	case KindTensor:
		return "tensor"
	case KindAsset:
		return "asset"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Descriptor describes a section: what it holds and how its payload is coded.
type Descriptor struct {
	Kind        Kind
	Name        string
	DType       tensor.DType
	Shape       []int64
	Codec       uint8
	Params      []byte
	RawSize     int64 // decoded bytes
	PayloadSize int64
}

// Info returns the tensor description of d.
func (d *Descriptor) Info() tensor.Info {
	return tensor.Info{Name: d.Name, DType: d.DType, Shape: append([]int64(nil), d.Shape...), Size: d.RawSize}
}

// Validate checks the descriptor's own consistency.
func (d *Descriptor) Validate() error {
	if d.Kind != KindTensor && d.Kind != KindAsset {
		return fmt.Errorf("unknown section kind %d", d.Kind)
	}
	if len(d.Name) == 0 || len(d.Name) > maxNameLen || !utf8.ValidString(d.Name) {
		return fmt.Errorf("invalid name (%d bytes)", len(d.Name))
	}
	if len(d.Params) > maxParamsLen {
		return fmt.Errorf("%q: codec parameters of %d bytes exceed %d", d.Name, len(d.Params), maxParamsLen)
	}
	if d.PayloadSize < 0 {
		return fmt.Errorf("%q: negative payload size", d.Name)
	}
	if err := tensor.CheckShape(d.DType, d.Shape, d.RawSize); err != nil {
		return fmt.Errorf("%q: %w", d.Name, err)
	}
	return nil
}

// marshal appends the binary descriptor to b.
func (d *Descriptor) marshal(b []byte) []byte {
	b = append(b, byte(d.Kind))
	b = binary.AppendUvarint(b, uint64(len(d.Name)))
	b = append(b, d.Name...)
	b = append(b, byte(d.DType))
	b = binary.AppendUvarint(b, uint64(len(d.Shape)))
	for _, s := range d.Shape {
		b = binary.AppendUvarint(b, uint64(s))
	}
	b = append(b, d.Codec)
	b = binary.AppendUvarint(b, uint64(len(d.Params)))
	b = append(b, d.Params...)
	b = binary.AppendUvarint(b, uint64(d.RawSize))
	b = binary.AppendUvarint(b, uint64(d.PayloadSize))
	return b
}

// decoder is a bounds-checked cursor over a byte slice.
type decoder struct {
	b   []byte
	err error
}

func (r *decoder) fail(format string, a ...any) {
	if r.err == nil {
		r.err = fmt.Errorf(format, a...)
	}
}

func (r *decoder) u8() uint8 {
	if r.err != nil {
		return 0
	}
	if len(r.b) < 1 {
		r.fail("truncated")
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *decoder) uvarint(max uint64, what string) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("bad varint for %s", what)
		return 0
	}
	if v > max {
		r.fail("%s %d exceeds limit %d", what, v, max)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *decoder) bytes(n uint64, what string) []byte {
	if r.err != nil {
		return nil
	}
	if uint64(len(r.b)) < n {
		r.fail("truncated %s", what)
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *decoder) u32() uint32 {
	v := r.bytes(4, "u32")
	if v == nil {
		return 0
	}
	return binary.LittleEndian.Uint32(v)
}

func (r *decoder) u64() uint64 {
	v := r.bytes(8, "u64")
	if v == nil {
		return 0
	}
	return binary.LittleEndian.Uint64(v)
}

// unmarshalDescriptor parses and validates a descriptor that must fill b exactly.
func unmarshalDescriptor(b []byte) (Descriptor, error) {
	r := decoder{b: b}
	var d Descriptor
	d.Kind = Kind(r.u8())
	d.Name = string(r.bytes(r.uvarint(maxNameLen, "name length"), "name"))
	d.DType = tensor.DType(r.u8())
	rank := r.uvarint(tensor.MaxRank, "rank")
	if r.err == nil {
		d.Shape = make([]int64, rank)
		for i := range d.Shape {
			d.Shape[i] = int64(r.uvarint(uint64(tensor.MaxElements), "dimension"))
		}
	}
	d.Codec = r.u8()
	if p := r.bytes(r.uvarint(maxParamsLen, "params length"), "params"); len(p) > 0 {
		d.Params = append([]byte(nil), p...)
	}
	d.RawSize = int64(r.uvarint(1<<62, "raw size"))
	d.PayloadSize = int64(r.uvarint(1<<62, "payload size"))
	if r.err != nil {
		return d, fmt.Errorf("descriptor: %v", r.err)
	}
	if len(r.b) != 0 {
		return d, fmt.Errorf("descriptor: %d trailing bytes", len(r.b))
	}
	if err := d.Validate(); err != nil {
		return d, fmt.Errorf("descriptor: %w", err)
	}
	return d, nil
}

func alignUp(n int64) int64 { return (n + Align - 1) &^ (Align - 1) }

// sectionLayout returns, for a section starting at off with a descriptor of
// descLen bytes and a payload of payloadLen bytes, the payload offset and the
// offset where the section (crc and padding included) ends.
func sectionLayout(off, descLen, payloadLen int64) (payloadOff, end int64) {
	payloadOff = alignUp(off + 8 + descLen)
	end = alignUp(payloadOff + payloadLen + 4)
	return
}

func crc(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }
