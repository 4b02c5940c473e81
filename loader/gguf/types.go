package gguf

import (
	"fmt"

	"github.com/nwc-project/nwc/loader/tensor"
)

// GGMLType is a tensor element type id as stored in a GGUF file (enum
// ggml_type).
type GGMLType uint32

// GGML type ids (ggml.h).
const (
	TypeF32     GGMLType = 0
	TypeF16     GGMLType = 1
	TypeQ4_0    GGMLType = 2
	TypeQ4_1    GGMLType = 3
	TypeQ5_0    GGMLType = 6
	TypeQ5_1    GGMLType = 7
	TypeQ8_0    GGMLType = 8
	TypeQ8_1    GGMLType = 9
	TypeQ2_K    GGMLType = 10
	TypeQ3_K    GGMLType = 11
	TypeQ4_K    GGMLType = 12
	TypeQ5_K    GGMLType = 13
	TypeQ6_K    GGMLType = 14
	TypeQ8_K    GGMLType = 15
	TypeIQ2_XXS GGMLType = 16
	TypeIQ2_XS  GGMLType = 17
	TypeIQ3_XXS GGMLType = 18
	TypeIQ1_S   GGMLType = 19
	TypeIQ4_NL  GGMLType = 20
	TypeIQ3_S   GGMLType = 21
	TypeIQ2_S   GGMLType = 22
	TypeIQ4_XS  GGMLType = 23
	TypeI8      GGMLType = 24
	TypeI16     GGMLType = 25
	TypeI32     GGMLType = 26
	TypeI64     GGMLType = 27
	TypeF64     GGMLType = 28
	TypeIQ1_M   GGMLType = 29
	TypeBF16    GGMLType = 30
	TypeTQ1_0   GGMLType = 34
	TypeTQ2_0   GGMLType = 35
	TypeMXFP4   GGMLType = 39
	TypeNVFP4   GGMLType = 40
	TypeQ1_0    GGMLType = 41
)

type ggmlTypeInfo struct {
	name       string
	blockElems int64
	blockBytes int64
	dtype      tensor.DType // tensor.Invalid: nwc cannot read it
}

// ggmlTypes lists every ggml type a GGUF file may contain, with its block
// geometry (from ggml's type traits), so that tensors of types nwc cannot
// convert can still be listed and bounds-checked.
var ggmlTypes = map[GGMLType]ggmlTypeInfo{
	TypeF32:     {"F32", 1, 4, tensor.F32},
	TypeF16:     {"F16", 1, 2, tensor.F16},
	TypeQ4_0:    {"Q4_0", 32, 18, tensor.Q4_0},
	TypeQ4_1:    {"Q4_1", 32, 20, tensor.Q4_1},
	TypeQ5_0:    {"Q5_0", 32, 22, tensor.Q5_0},
	TypeQ5_1:    {"Q5_1", 32, 24, tensor.Q5_1},
	TypeQ8_0:    {"Q8_0", 32, 34, tensor.Q8_0},
	TypeQ8_1:    {"Q8_1", 32, 36, tensor.Invalid},
	TypeQ2_K:    {"Q2_K", 256, 84, tensor.Q2_K},
	TypeQ3_K:    {"Q3_K", 256, 110, tensor.Q3_K},
	TypeQ4_K:    {"Q4_K", 256, 144, tensor.Q4_K},
	TypeQ5_K:    {"Q5_K", 256, 176, tensor.Q5_K},
	TypeQ6_K:    {"Q6_K", 256, 210, tensor.Q6_K},
	TypeQ8_K:    {"Q8_K", 256, 292, tensor.Q8_K},
	TypeIQ2_XXS: {"IQ2_XXS", 256, 66, tensor.Invalid},
	TypeIQ2_XS:  {"IQ2_XS", 256, 74, tensor.Invalid},
	TypeIQ3_XXS: {"IQ3_XXS", 256, 98, tensor.Invalid},
	TypeIQ1_S:   {"IQ1_S", 256, 50, tensor.Invalid},
	TypeIQ4_NL:  {"IQ4_NL", 32, 18, tensor.IQ4_NL},
	TypeIQ3_S:   {"IQ3_S", 256, 110, tensor.Invalid},
	TypeIQ2_S:   {"IQ2_S", 256, 82, tensor.Invalid},
	TypeIQ4_XS:  {"IQ4_XS", 256, 136, tensor.IQ4_XS},
	TypeI8:      {"I8", 1, 1, tensor.I8},
	TypeI16:     {"I16", 1, 2, tensor.I16},
	TypeI32:     {"I32", 1, 4, tensor.I32},
	TypeI64:     {"I64", 1, 8, tensor.I64},
	TypeF64:     {"F64", 1, 8, tensor.F64},
	TypeIQ1_M:   {"IQ1_M", 256, 56, tensor.Invalid},
	TypeBF16:    {"BF16", 1, 2, tensor.BF16},
	TypeTQ1_0:   {"TQ1_0", 256, 54, tensor.Invalid},
	TypeTQ2_0:   {"TQ2_0", 256, 66, tensor.Invalid},
	TypeMXFP4:   {"MXFP4", 32, 17, tensor.Invalid},
	TypeNVFP4:   {"NVFP4", 64, 36, tensor.Invalid},
	TypeQ1_0:    {"Q1_0", 128, 18, tensor.Invalid},
}

func (t GGMLType) String() string {
	if ti, ok := ggmlTypes[t]; ok {
		return ti.name
	}
	return fmt.Sprintf("ggml_type(%d)", uint32(t))
}

// DType returns the nwc dtype of t, or tensor.Invalid when nwc cannot read
// tensors of that type.
func (t GGMLType) DType() tensor.DType { return ggmlTypes[t].dtype }

// GGMLTypeOf returns the GGML type id of an nwc dtype (false when GGUF has
// no equivalent, e.g. U8 and BOOL).
func GGMLTypeOf(dt tensor.DType) (GGMLType, bool) {
	if dt == tensor.Invalid {
		return 0, false
	}
	for t, ti := range ggmlTypes {
		if ti.dtype == dt {
			return t, true
		}
	}
	return 0, false
}

// storageBytes returns the bytes n elements of t occupy.
func (t GGMLType) storageBytes(n int64) (int64, error) {
	ti, ok := ggmlTypes[t]
	if !ok {
		return 0, fmt.Errorf("%w: unknown ggml type %d", tensor.ErrUnsupportedDType, uint32(t))
	}
	if n < 0 || n > tensor.MaxElements {
		return 0, fmt.Errorf("%w: element count %d", tensor.ErrShape, n)
	}
	if n%ti.blockElems != 0 {
		return 0, fmt.Errorf("%w: %d elements is not a multiple of the %s block size %d", tensor.ErrShape, n, ti.name, ti.blockElems)
	}
	return n / ti.blockElems * ti.blockBytes, nil
}
