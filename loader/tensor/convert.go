package tensor

import (
	"encoding/binary"
	"fmt"
	"math"
)

// F32Bytes writes f as little-endian float32 bytes into dst (grown when too
// small) and returns it.
func F32Bytes(f []float32, dst []byte) []byte {
	n := 4 * len(f)
	if cap(dst) < n {
		dst = make([]byte, n)
	}
	dst = dst[:n]
	for i, v := range f {
		binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
	}
	return dst
}

// Convert converts n elements stored as from in raw to the float dtype to
// (F32, F16 or BF16), little endian, into dst (grown when too small). When
// from == to the bytes are copied as they are. Narrowing rounds to nearest
// even; GGML block types are dequantized first.
func Convert(from DType, raw []byte, n int64, to DType, dst []byte) ([]byte, error) {
	if to != F32 && to != F16 && to != BF16 {
		return nil, fmt.Errorf("%w: cannot convert to %s (F32, F16 or BF16)", ErrUnsupportedDType, to)
	}
	need, err := from.StorageBytes(n)
	if err != nil {
		return nil, err
	}
	if int64(len(raw)) != need {
		return nil, fmt.Errorf("%w: %d %s elements need %d bytes, have %d", ErrShape, n, from, need, len(raw))
	}
	if from == to {
		return append(dst[:0], raw...), nil
	}
	f, err := ToFloat32(from, raw, n, nil)
	if err != nil {
		return nil, err
	}
	if to == F32 {
		return F32Bytes(f, dst), nil
	}
	if int64(cap(dst)) < 2*n {
		dst = make([]byte, 2*n)
	}
	dst = dst[:2*n]
	for i, v := range f {
		var h uint16
		if to == F16 {
			h = F32ToF16(v)
		} else {
			h = F32ToBF16(v)
		}
		binary.LittleEndian.PutUint16(dst[2*i:], h)
	}
	return dst, nil
}

// RawReader is the part of a Source that ReadFloat32 needs.
type RawReader interface {
	Tensors() []Info
	ReadRaw(name string, dst []byte) ([]byte, error)
}

// ReadFloat32 reads the named tensor's stored bytes from src and converts
// them to float32 in dst (grown when too small): the one implementation of
// Source.ReadFloat32 every reader shares. where names the source in errors
// ("gguf: model.gguf").
func ReadFloat32(src RawReader, where, name string, dst []float32) ([]float32, error) {
	ti, ok := Find(src.Tensors(), name)
	if !ok {
		return nil, fmt.Errorf("%s: tensor %q: %w", where, name, ErrNotFound)
	}
	if !ti.DType.IsFloat() {
		return nil, fmt.Errorf("%s: tensor %q: %w: cannot convert %s to float32", where, name, ErrUnsupportedDType, ti.DType)
	}
	raw, err := src.ReadRaw(name, nil)
	if err != nil {
		return nil, err
	}
	out, err := ToFloat32(ti.DType, raw, ti.NumElements(), dst)
	if err != nil {
		return nil, fmt.Errorf("%s: tensor %q: %w", where, name, err)
	}
	return out, nil
}
