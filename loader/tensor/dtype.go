package tensor

import (
	"encoding/binary"
	"fmt"
	"math"
	"strings"
)

// DType is a stored element type. Block-quantized GGML types store BlockElems
// elements in BlockBytes bytes.
type DType uint8

// The dtypes nwc knows. The numeric values are part of the .nwc format: never
// renumber, only append.
const (
	Invalid DType = iota
	F32
	F16
	BF16
	F64
	I8
	I16
	I32
	I64
	U8
	Bool
	Q8_0
	Q4_0
	Q4_1
	Q5_0
	Q5_1
	Q2_K
	Q3_K
	Q4_K
	Q5_K
	Q6_K
	Q8_K
	IQ4_NL
	IQ4_XS
	numDTypes
)

type dtypeInfo struct {
	name       string
	blockElems int64
	blockBytes int64
	float      bool // converts to float32 (ToFloat32 supported)
}

var dtypes = [numDTypes]dtypeInfo{
	Invalid: {"invalid", 0, 0, false},
	F32:     {"F32", 1, 4, true},
	F16:     {"F16", 1, 2, true},
	BF16:    {"BF16", 1, 2, true},
	F64:     {"F64", 1, 8, true},
	I8:      {"I8", 1, 1, false},
	I16:     {"I16", 1, 2, false},
	I32:     {"I32", 1, 4, false},
	I64:     {"I64", 1, 8, false},
	U8:      {"U8", 1, 1, false},
	Bool:    {"BOOL", 1, 1, false},
	Q8_0:    {"Q8_0", 32, 34, true},
	Q4_0:    {"Q4_0", 32, 18, true},
	Q4_1:    {"Q4_1", 32, 20, true},
	Q5_0:    {"Q5_0", 32, 22, true},
	Q5_1:    {"Q5_1", 32, 24, true},
	Q2_K:    {"Q2_K", 256, 84, true},
	Q3_K:    {"Q3_K", 256, 110, true},
	Q4_K:    {"Q4_K", 256, 144, true},
	Q5_K:    {"Q5_K", 256, 176, true},
	Q6_K:    {"Q6_K", 256, 210, true},
	Q8_K:    {"Q8_K", 256, 292, true},
	IQ4_NL:  {"IQ4_NL", 32, 18, true},
	IQ4_XS:  {"IQ4_XS", 256, 136, true},
}

// Valid reports whether d is a known dtype.
func (d DType) Valid() bool { return d > Invalid && d < numDTypes }

func (d DType) String() string {
	if d < numDTypes {
		return dtypes[d].name
	}
	return fmt.Sprintf("dtype(%d)", uint8(d))
}

// ParseDType parses a dtype name as printed by String (case-insensitive).
func ParseDType(s string) (DType, error) {
	for i := DType(1); i < numDTypes; i++ {
		if strings.EqualFold(dtypes[i].name, s) {
			return i, nil
		}
	}
	return Invalid, fmt.Errorf("%w: %q", ErrUnsupportedDType, s)
}

// BlockElems is the number of elements in one storage block (1 for plain types).
func (d DType) BlockElems() int64 {
	if !d.Valid() {
		return 0
	}
	return dtypes[d].blockElems
}

// BlockBytes is the number of bytes of one storage block.
func (d DType) BlockBytes() int64 {
	if !d.Valid() {
		return 0
	}
	return dtypes[d].blockBytes
}

// Quantized reports whether d is a block-quantized GGML type.
func (d DType) Quantized() bool { return d.Valid() && dtypes[d].blockElems > 1 }

// IsFloat reports whether ToFloat32 can convert d.
func (d DType) IsFloat() bool { return d.Valid() && dtypes[d].float }

// BitsPerElement is the storage cost of one element, scales included.
func (d DType) BitsPerElement() float64 {
	if !d.Valid() {
		return 0
	}
	return 8 * float64(dtypes[d].blockBytes) / float64(dtypes[d].blockElems)
}

// StorageBytes returns the bytes n elements of d occupy. n must be a multiple
// of the block size.
func (d DType) StorageBytes(n int64) (int64, error) {
	if !d.Valid() {
		return 0, fmt.Errorf("%w: %s", ErrUnsupportedDType, d)
	}
	if n < 0 || n > MaxElements {
		return 0, fmt.Errorf("%w: element count %d", ErrShape, n)
	}
	be := dtypes[d].blockElems
	if n%be != 0 {
		return 0, fmt.Errorf("%w: %d elements is not a multiple of the %s block size %d", ErrShape, n, d, be)
	}
	return n / be * dtypes[d].blockBytes, nil
}

// dequantize converts raw (exactly the right length, checked by the caller)
// to float32.
func dequantize(dt DType, raw []byte, dst []float32) error {
	switch dt {
	case F32:
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
	case F16:
		for i := range dst {
			dst[i] = F16ToF32(binary.LittleEndian.Uint16(raw[2*i:]))
		}
	case BF16:
		for i := range dst {
			dst[i] = BF16ToF32(binary.LittleEndian.Uint16(raw[2*i:]))
		}
	case F64:
		for i := range dst {
			dst[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(raw[8*i:])))
		}
	default:
		if dt.Quantized() {
			return dequantizeGGML(dt, raw, dst)
		}
		return fmt.Errorf("%w: cannot convert %s to float32", ErrUnsupportedDType, dt)
	}
	return nil
}
