package onnxinit

import (
	"fmt"
	"io"

	"google.golang.org/protobuf/encoding/protowire"
)

// span is a byte range of the model file.
type span struct{ off, n int64 }

func (s span) end() int64 { return s.off + s.n }

// scanner walks protobuf messages of a file through ReadAt, reading a window
// of the file at a time, so that large fields (raw_data) are skipped without
// being read.
type scanner struct {
	r      io.ReaderAt
	size   int64
	buf    []byte
	bufOff int64
}

const windowSize = 32 << 10

// bytesAt returns the n bytes at off (n <= windowSize, off+n <= size).
func (s *scanner) bytesAt(off int64, n int) ([]byte, error) {
	if off < 0 || n < 0 || off+int64(n) > s.size {
		return nil, fmt.Errorf("%w: read past the end of the file", ErrCorrupt)
	}
	if off >= s.bufOff && off+int64(n) <= s.bufOff+int64(len(s.buf)) {
		return s.buf[off-s.bufOff : off-s.bufOff+int64(n)], nil
	}
	want := int64(windowSize)
	if n > windowSize {
		want = int64(n)
	}
	if rem := s.size - off; want > rem {
		want = rem
	}
	if int64(cap(s.buf)) < want {
		s.buf = make([]byte, want)
	}
	s.buf = s.buf[:want]
	m, err := s.r.ReadAt(s.buf, off)
	if err != nil && m != len(s.buf) {
		s.buf = s.buf[:0]
		return nil, err
	}
	s.bufOff = off
	return s.buf[:n], nil
}

// readSpan returns a copy of the bytes of sp, which must be at most limit long.
func (s *scanner) readSpan(sp span, limit int64, what string) ([]byte, error) {
	if sp.n > limit {
		return nil, fmt.Errorf("%w: %s of %d bytes exceeds the limit %d", ErrCorrupt, what, sp.n, limit)
	}
	out := make([]byte, sp.n)
	if sp.n == 0 {
		return out, nil
	}
	m, err := s.r.ReadAt(out, sp.off)
	if err != nil && m != len(out) {
		return nil, err
	}
	return out, nil
}

// field is one field of a message: its number and wire type, the value of a
// varint or fixed field, and the range of a length-delimited one.
type field struct {
	num protowire.Number
	typ protowire.Type
	v   uint64
	sp  span
}

// fields calls fn for each field of the message in [start, end).
func (s *scanner) fields(msg span, fn func(f field) error) error {
	off, end := msg.off, msg.end()
	for off < end {
		hdr, err := s.bytesAt(off, int(min(end-off, 2*binaryMaxVarint)))
		if err != nil {
			return err
		}
		num, typ, n := protowire.ConsumeTag(hdr)
		if n < 0 {
			return fmt.Errorf("%w: bad field tag at offset %d: %v", ErrCorrupt, off, protowire.ParseError(n))
		}
		off += int64(n)
		f := field{num: num, typ: typ}
		switch typ {
		case protowire.VarintType:
			b, err := s.bytesAt(off, int(min(end-off, binaryMaxVarint)))
			if err != nil {
				return err
			}
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return fmt.Errorf("%w: bad varint at offset %d: %v", ErrCorrupt, off, protowire.ParseError(n))
			}
			f.v = v
			off += int64(n)
		case protowire.Fixed32Type:
			if end-off < 4 {
				return fmt.Errorf("%w: truncated fixed32 at offset %d", ErrCorrupt, off)
			}
			b, err := s.bytesAt(off, 4)
			if err != nil {
				return err
			}
			v, _ := protowire.ConsumeFixed32(b)
			f.v = uint64(v)
			off += 4
		case protowire.Fixed64Type:
			if end-off < 8 {
				return fmt.Errorf("%w: truncated fixed64 at offset %d", ErrCorrupt, off)
			}
			b, err := s.bytesAt(off, 8)
			if err != nil {
				return err
			}
			f.v, _ = protowire.ConsumeFixed64(b)
			off += 8
		case protowire.BytesType:
			b, err := s.bytesAt(off, int(min(end-off, binaryMaxVarint)))
			if err != nil {
				return err
			}
			l, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return fmt.Errorf("%w: bad length at offset %d: %v", ErrCorrupt, off, protowire.ParseError(n))
			}
			off += int64(n)
			if l > uint64(end-off) {
				return fmt.Errorf("%w: field %d at offset %d: length %d exceeds its message", ErrCorrupt, num, off, l)
			}
			f.sp = span{off, int64(l)}
			off += int64(l)
		default:
			return fmt.Errorf("%w: unsupported wire type %d of field %d at offset %d", ErrCorrupt, typ, num, off)
		}
		if err := fn(f); err != nil {
			return err
		}
	}
	return nil
}

const binaryMaxVarint = 10

// wantType checks the wire type of a known field.
func wantType(f field, typ protowire.Type, what string) error {
	if f.typ != typ {
		return fmt.Errorf("%w: field %s (%d) has wire type %d, want %d", ErrCorrupt, what, f.num, f.typ, typ)
	}
	return nil
}

// parseStringEntry decodes a StringStringEntryProto (key = 1, value = 2).
func parseStringEntry(b []byte) (key, value string, err error) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return "", "", fmt.Errorf("%w: bad key/value entry: %v", ErrCorrupt, protowire.ParseError(n))
		}
		b = b[n:]
		if (num == 1 || num == 2) && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return "", "", fmt.Errorf("%w: bad key/value entry: %v", ErrCorrupt, protowire.ParseError(n))
			}
			if num == 1 {
				key = string(v)
			} else {
				value = string(v)
			}
			b = b[n:]
			continue
		}
		if num == 1 || num == 2 {
			return "", "", fmt.Errorf("%w: bad key/value entry: wire type %d of field %d", ErrCorrupt, typ, num)
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return "", "", fmt.Errorf("%w: bad key/value entry: %v", ErrCorrupt, protowire.ParseError(n))
		}
		b = b[n:]
	}
	return key, value, nil
}
