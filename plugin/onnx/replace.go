package onnx

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/plugin/onnx/onnxpb"
)

// Errors of ReplaceInitializers, wrapped with the names involved.
var (
	ErrNoInitializer = errors.New("no such initializer")
	ErrShapeMismatch = errors.New("shape mismatch")
	ErrDTypeMismatch = errors.New("dtype mismatch")
)

// ONNX element types and the nwc dtypes they store.
var onnxToDType = map[int32]tensor.DType{
	int32(onnxpb.TensorProto_FLOAT):    tensor.F32,
	int32(onnxpb.TensorProto_FLOAT16):  tensor.F16,
	int32(onnxpb.TensorProto_BFLOAT16): tensor.BF16,
	int32(onnxpb.TensorProto_DOUBLE):   tensor.F64,
	int32(onnxpb.TensorProto_INT8):     tensor.I8,
	int32(onnxpb.TensorProto_INT16):    tensor.I16,
	int32(onnxpb.TensorProto_INT32):    tensor.I32,
	int32(onnxpb.TensorProto_INT64):    tensor.I64,
	int32(onnxpb.TensorProto_UINT8):    tensor.U8,
	int32(onnxpb.TensorProto_BOOL):     tensor.Bool,
}

// DTypeOf returns the nwc dtype of an ONNX element type.
func DTypeOf(elem int32) (tensor.DType, bool) {
	d, ok := onnxToDType[elem]
	return d, ok
}

// ReplaceOptions selects what ReplaceInitializers replaces.
type ReplaceOptions struct {
	// Names lists the initializers to replace; each must exist in the model
	// and (under SourceName) in the source. Nil: every initializer whose
	// source name the source has (at least one must match).
	Names []string
	// SourceName maps an initializer name to the tensor name in the source
	// (nil: the same name).
	SourceName func(initializer string) string
}

// ReplaceInitializers parses model, replaces initializers by tensors read
// from src, and returns the new model bytes with the replaced names.
//
// Shapes must be equal. The element type must be the same, except that a
// FLOAT initializer accepts any source dtype that converts to float32
// (F16, BF16, GGML block types, ...: it is dequantized). Replaced tensors are
// stored as raw_data (any external-data reference is dropped).
func ReplaceInitializers(model []byte, src tensor.Source, opts ReplaceOptions) ([]byte, []string, error) {
	m, err := UnmarshalModel(model)
	if err != nil {
		return nil, nil, err
	}
	srcName := opts.SourceName
	if srcName == nil {
		srcName = func(s string) string { return s }
	}
	infos := src.Tensors()
	inits := m.GetGraph().GetInitializer()
	byName := make(map[string]*onnxpb.TensorProto, len(inits))
	for _, t := range inits {
		byName[t.GetName()] = t
	}
	var todo []string
	if opts.Names != nil {
		for _, n := range opts.Names {
			if byName[n] == nil {
				return nil, nil, fmt.Errorf("onnx: replace %q: %w in the model", n, ErrNoInitializer)
			}
			if _, ok := tensor.Find(infos, srcName(n)); !ok {
				return nil, nil, fmt.Errorf("onnx: replace %q: source has no tensor %q: %w", n, srcName(n), tensor.ErrNotFound)
			}
			todo = append(todo, n)
		}
	} else {
		for _, t := range inits {
			if _, ok := tensor.Find(infos, srcName(t.GetName())); ok {
				todo = append(todo, t.GetName())
			}
		}
		if len(todo) == 0 {
			return nil, nil, fmt.Errorf("onnx: none of the model's %d initializers is in the source: %w", len(inits), ErrNoInitializer)
		}
	}
	var f32 []float32
	for _, n := range todo {
		t := byName[n]
		sn := srcName(n)
		info, _ := tensor.Find(infos, sn)
		if !slices.Equal(t.GetDims(), info.Shape) {
			return nil, nil, fmt.Errorf("onnx: initializer %q has shape %v, source tensor %q %v: %w", n, t.GetDims(), sn, info.Shape, ErrShapeMismatch)
		}
		want, ok := DTypeOf(t.GetDataType())
		if !ok {
			return nil, nil, fmt.Errorf("onnx: initializer %q: element type %s: %w", n, onnxpb.TensorProto_DataType(t.GetDataType()), tensor.ErrUnsupportedDType)
		}
		var raw []byte
		switch {
		case info.DType == want:
			raw, err = src.ReadRaw(sn, nil)
		case want == tensor.F32 && info.DType.IsFloat():
			f32, err = src.ReadFloat32(sn, f32)
			if err == nil {
				raw = make([]byte, 4*len(f32))
				for i, v := range f32 {
					binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
				}
			}
		default:
			return nil, nil, fmt.Errorf("onnx: initializer %q is %s, source tensor %q is %s: %w", n, want, sn, info.DType, ErrDTypeMismatch)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("onnx: read %q for initializer %q: %w", sn, n, err)
		}
		if nb, _ := want.StorageBytes(info.NumElements()); int64(len(raw)) != nb {
			return nil, nil, fmt.Errorf("onnx: initializer %q: %d bytes read, want %d: %w", n, len(raw), nb, tensor.ErrShape)
		}
		setRaw(t, raw)
	}
	out, err := MarshalModel(m)
	if err != nil {
		return nil, nil, err
	}
	return out, todo, nil
}

// setRaw stores raw as t's data, clearing every other data field.
func setRaw(t *onnxpb.TensorProto, raw []byte) {
	t.RawData = raw
	t.FloatData = nil
	t.Int32Data = nil
	t.Int64Data = nil
	t.DoubleData = nil
	t.Uint64Data = nil
	t.StringData = nil
	t.ExternalData = nil
	t.DataLocation = nil
}
