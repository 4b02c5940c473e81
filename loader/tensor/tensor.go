// Package tensor defines the common description of a tensor that every stage of
// nwc shares (sources such as safetensors, GGUF and ONNX files; the .nwc
// container; codecs; runtimes), together with dtype arithmetic and the
// conversions of stored element types to float32.
//
// Shapes are always given in row-major order, slowest-varying dimension first
// (the PyTorch order: a linear weight is [out, in]). Readers of formats that
// list dimensions the other way round (GGUF) reverse them.
package tensor

import (
	"errors"
	"fmt"
	"math"
)

// MaxRank is the largest tensor rank any nwc reader accepts.
const MaxRank = 8

// MaxElements bounds the element count of one tensor (2^40) so that a hostile
// header cannot make a reader compute absurd sizes.
const MaxElements = int64(1) << 40

// Info describes one stored tensor.
type Info struct {
	Name  string
	DType DType
	// Shape in row-major order, slowest dimension first.
	Shape []int64
	// Size is the number of bytes the tensor occupies in its stored dtype.
	Size int64
}

// NumElements returns the product of the shape (1 for a scalar).
func (i Info) NumElements() int64 { return NumElements(i.Shape) }

// NumElements returns the product of dims, or -1 if a dim is negative or the
// product exceeds MaxElements.
func NumElements(dims []int64) int64 {
	n := int64(1)
	for _, d := range dims {
		if d < 0 {
			return -1
		}
		if d == 0 {
			return 0
		}
		if n > MaxElements/d {
			return -1
		}
		n *= d
	}
	return n
}

// Asset is a named blob of model metadata that travels with the weights:
// config.json, tokenizer.json, the GGUF key/value metadata (as JSON), ...
type Asset struct {
	Name string
	Data []byte
}

// Source is anything tensors can be read from. Implementations read lazily:
// opening a Source reads only its header, and each Read call reads one tensor.
// ReadRaw and ReadFloat32 must be safe for concurrent use.
type Source interface {
	// Tensors lists the tensors in storage order.
	Tensors() []Info
	// Assets returns the model metadata carried by the source.
	Assets() []Asset
	// ReadRaw returns the stored bytes of the named tensor (Info.Size bytes,
	// in Info.DType, little endian), reusing dst when it is large enough.
	ReadRaw(name string, dst []byte) ([]byte, error)
	// ReadFloat32 returns the tensor converted (dequantized) to float32,
	// reusing dst when it is large enough.
	ReadFloat32(name string, dst []float32) ([]float32, error)
	Close() error
}

// Errors shared by all readers. Readers wrap them with the file and tensor
// names, so test with errors.Is.
var (
	// ErrNotFound: the named tensor does not exist in the source.
	ErrNotFound = errors.New("tensor not found")
	// ErrUnsupportedDType: the dtype cannot be converted or is unknown.
	ErrUnsupportedDType = Kind("unsupported dtype", ErrUnsupported)
	// ErrShape: a shape does not match a byte count, or is otherwise invalid.
	ErrShape = errors.New("invalid shape")
)

// Find returns the Info of the named tensor in infos.
func Find(infos []Info, name string) (Info, bool) {
	for _, ti := range infos {
		if ti.Name == name {
			return ti, true
		}
	}
	return Info{}, false
}

// CheckShape verifies that shape is valid and that size bytes hold exactly the
// elements of shape in dtype dt.
func CheckShape(dt DType, shape []int64, size int64) error {
	if len(shape) > MaxRank {
		return fmt.Errorf("%w: rank %d exceeds %d", ErrShape, len(shape), MaxRank)
	}
	n := NumElements(shape)
	if n < 0 {
		return fmt.Errorf("%w: dims %v", ErrShape, shape)
	}
	want, err := dt.StorageBytes(n)
	if err != nil {
		return err
	}
	if want != size {
		return fmt.Errorf("%w: %v %s needs %d bytes, have %d", ErrShape, shape, dt, want, size)
	}
	return nil
}

// ToFloat32 converts n elements stored as dt in raw to float32 in dst
// (allocated or grown when too small) and returns it.
func ToFloat32(dt DType, raw []byte, n int64, dst []float32) ([]float32, error) {
	need, err := dt.StorageBytes(n)
	if err != nil {
		return nil, err
	}
	if int64(len(raw)) != need {
		return nil, fmt.Errorf("%w: %d %s elements need %d bytes, have %d", ErrShape, n, dt, need, len(raw))
	}
	if int64(cap(dst)) < n {
		dst = make([]float32, n)
	}
	dst = dst[:n]
	if err := dequantize(dt, raw, dst); err != nil {
		return nil, err
	}
	return dst, nil
}

// F16ToF32 converts an IEEE 754 half-precision value to float32 exactly.
func F16ToF32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // inf / nan
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case exp == 0:
		if mant == 0 {
			return math.Float32frombits(sign)
		}
		// subnormal: normalise
		e := uint32(127 - 15 + 1)
		for mant&0x400 == 0 {
			mant <<= 1
			e--
		}
		mant &= 0x3ff
		return math.Float32frombits(sign | e<<23 | mant<<13)
	default:
		return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
	}
}

// F32ToF16 converts float32 to half precision with round-to-nearest-even.
func F32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23) & 0xff
	mant := b & 0x7fffff
	if exp == 0xff {
		if mant != 0 {
			return sign | 0x7e00 | uint16(mant>>13)
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		if e < -10 {
			return sign
		}
		mant |= 0x800000
		shift := uint32(14 - e)
		half := uint32(1) << (shift - 1)
		r := mant >> shift
		rem := mant & ((1 << shift) - 1)
		if rem > half || (rem == half && r&1 == 1) {
			r++
		}
		return sign | uint16(r)
	}
	r := uint32(e)<<10 | mant>>13
	rem := mant & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && r&1 == 1) {
		r++
	}
	return sign | uint16(r)
}

// BF16ToF32 converts a bfloat16 value to float32 exactly.
func BF16ToF32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// F32ToBF16 converts float32 to bfloat16 with round-to-nearest-even.
func F32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 { // nan
		return uint16(b>>16) | 0x40
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}
