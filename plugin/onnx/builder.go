// Package onnx builds ONNX graphs from Go.
//
// The protobuf messages are in onnxpb (generated from the ONNX project's
// onnx.proto by scripts/gen_onnx_proto.sh). Graph is a small builder: add
// inputs and outputs (with fixed or named, dynamic dimensions), initializers
// from Go slices, and nodes whose outputs are named automatically; then
// Marshal the model to bytes that ONNX Runtime can load directly.
//
// Reading the weights of an existing .onnx file is loader/onnxinit's job.
package onnx

import (
	"encoding/binary"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"unsafe"

	"google.golang.org/protobuf/proto"

	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/plugin/onnx/onnxpb"
)

// DefaultOpset is the default-domain opset Graph.Model declares. ONNX Runtime
// 1.24 supports opsets up to 23; 17 covers everything nwc builds.
const DefaultOpset = 17

// IRVersion is the ONNX IR version written for opsets 17 and 18 (newer
// opsets get the IR version they were released with).
const IRVersion = 8

// irVersion is the IR version that goes with a default-domain opset (the
// ONNX versioning table; IRVersion at least).
func irVersion(opset int64) int64 {
	switch {
	case opset >= 23:
		return 11
	case opset >= 21:
		return 10
	case opset >= 19:
		return 9
	}
	return IRVersion
}

// MaxModelBytes is protobuf's message size limit: a model with its weights
// as initializers must serialise to less than this.
const MaxModelBytes = 2<<30 - 1

// Element types (onnx.TensorProto.DataType).
const (
	Float   = int32(onnxpb.TensorProto_FLOAT)
	Float16 = int32(onnxpb.TensorProto_FLOAT16)
	Int32   = int32(onnxpb.TensorProto_INT32)
	Int64   = int32(onnxpb.TensorProto_INT64)
	BoolT   = int32(onnxpb.TensorProto_BOOL)
)

// Dim is one dimension of a graph input or output: a fixed size, or a named
// dynamic dimension (Param != "").
type Dim struct {
	Value int64
	Param string
}

// D is a fixed dimension.
func D(n int64) Dim { return Dim{Value: n} }

// P is a dynamic dimension called name (for example "batch", "seq").
func P(name string) Dim { return Dim{Param: name} }

// Attr is a node attribute; make one with AttrInt, AttrInts, AttrFloat, ...
type Attr = *onnxpb.AttributeProto

// AttrInt is an INT attribute.
func AttrInt(name string, v int64) Attr {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(v)}
}

// AttrInts is an INTS attribute.
func AttrInts(name string, v ...int64) Attr {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INTS.Enum(), Ints: append([]int64(nil), v...)}
}

// AttrFloat is a FLOAT attribute.
func AttrFloat(name string, v float32) Attr {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_FLOAT.Enum(), F: proto.Float32(v)}
}

// AttrString is a STRING attribute.
func AttrString(name, v string) Attr {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_STRING.Enum(), S: []byte(v)}
}

// AttrTensor is a TENSOR attribute (for Constant and ConstantOfShape).
func AttrTensor(name string, t *onnxpb.TensorProto) Attr {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_TENSOR.Enum(), T: t}
}

// Graph builds one ONNX graph.
type Graph struct {
	g      *onnxpb.GraphProto
	names  map[string]bool
	serial int
	// Opset is the default-domain opset version Model declares.
	Opset int64
	// Producer is written as the model's producer_name.
	Producer string
	// domains are the non-default operator domains used (domain -> opset).
	domains map[string]int64

	// External data (SetExternal): the sink, the size from which an
	// initializer goes there, the sink's first error, and the bytes of
	// initializer data embedded and external.
	ext                ExternalSink
	extMin             int
	err                error
	embedded, external int64
}

// MicrosoftDomain is ONNX Runtime's contrib-op domain.
const MicrosoftDomain = "com.microsoft"

// NodeDomain adds a node of an operator in another domain (declared in the
// model's opset imports at version, 1 for com.microsoft) with n fresh
// outputs. An input "" marks an omitted optional input.
func (g *Graph) NodeDomain(domain string, version int64, op string, inputs []string, n int, attrs ...Attr) []string {
	if g.domains == nil {
		g.domains = map[string]int64{}
	}
	g.domains[domain] = max(g.domains[domain], version)
	outs := g.NodeN(op, inputs, n, attrs...)
	g.g.Node[len(g.g.Node)-1].Domain = proto.String(domain)
	return outs
}

// NewGraph starts an empty graph called name.
func NewGraph(name string) *Graph {
	return &Graph{
		g:        &onnxpb.GraphProto{Name: proto.String(name)},
		names:    map[string]bool{},
		Opset:    DefaultOpset,
		Producer: "nwc",
	}
}

// Proto returns the graph message being built (for inspection and for
// additions the builder does not cover).
func (g *Graph) Proto() *onnxpb.GraphProto { return g.g }

// Fresh returns a value name that is not used yet, derived from prefix.
func (g *Graph) Fresh(prefix string) string {
	for {
		g.serial++
		n := prefix + "_" + strconv.Itoa(g.serial)
		if !g.names[n] {
			g.names[n] = true
			return n
		}
	}
}

func (g *Graph) claim(name string) {
	if g.names[name] {
		panic(fmt.Sprintf("onnx: value name %q used twice", name))
	}
	g.names[name] = true
}

func valueInfo(name string, elem int32, dims []Dim) *onnxpb.ValueInfoProto {
	shape := &onnxpb.TensorShapeProto{}
	for _, d := range dims {
		td := &onnxpb.TensorShapeProto_Dimension{}
		if d.Param != "" {
			td.Value = &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: d.Param}
		} else {
			td.Value = &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: d.Value}
		}
		shape.Dim = append(shape.Dim, td)
	}
	return &onnxpb.ValueInfoProto{
		Name: proto.String(name),
		Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{TensorType: &onnxpb.TypeProto_Tensor{
			ElemType: proto.Int32(elem),
			Shape:    shape,
		}}},
	}
}

// Input declares a graph input and returns its name.
func (g *Graph) Input(name string, elem int32, dims ...Dim) string {
	g.claim(name)
	g.g.Input = append(g.g.Input, valueInfo(name, elem, dims))
	return name
}

// Output declares the existing value name as a graph output.
func (g *Graph) Output(name string, elem int32, dims ...Dim) {
	g.g.Output = append(g.g.Output, valueInfo(name, elem, dims))
}

// TensorFloat32 makes a FLOAT TensorProto (raw little-endian data).
func TensorFloat32(name string, shape []int64, data []float32) *onnxpb.TensorProto {
	return &onnxpb.TensorProto{Name: proto.String(name), DataType: proto.Int32(Float), Dims: append([]int64{}, shape...), RawData: Float32Bytes(data)}
}

// Float32Bytes returns data as little-endian bytes (a copy).
func Float32Bytes(data []float32) []byte {
	raw := make([]byte, 4*len(data))
	if littleEndian {
		copy(raw, unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(data))), 4*len(data)))
		return raw
	}
	for i, v := range data {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
	}
	return raw
}

var littleEndian = func() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}()

// TensorInt64 makes an INT64 TensorProto (raw little-endian data).
func TensorInt64(name string, shape []int64, data []int64) *onnxpb.TensorProto {
	raw := make([]byte, 8*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint64(raw[8*i:], uint64(v))
	}
	return &onnxpb.TensorProto{Name: proto.String(name), DataType: proto.Int32(Int64), Dims: append([]int64{}, shape...), RawData: raw}
}

func checkCount(name string, shape []int64, n int) {
	want := int64(1)
	for _, d := range shape {
		want *= d
	}
	if want != int64(n) {
		panic(fmt.Sprintf("onnx: initializer %s: shape %v needs %d elements, have %d", name, shape, want, n))
	}
}

// Initializer adds a prepared TensorProto as an initializer and returns its name.
func (g *Graph) Initializer(t *onnxpb.TensorProto) string {
	g.claim(t.GetName())
	return g.freshInit(t)
}

// freshInit adds t, whose name came from Fresh (already claimed).
func (g *Graph) freshInit(t *onnxpb.TensorProto) string {
	g.embedded += int64(len(t.RawData))
	g.g.Initializer = append(g.g.Initializer, t)
	return t.GetName()
}

// InitFloat32 adds a FLOAT initializer; it panics when len(data) does not
// match shape (a programming error). With SetExternal, data of at least the
// sink's threshold is written to the sink (and not kept); otherwise it is
// copied into the protobuf.
func (g *Graph) InitFloat32(name string, shape []int64, data []float32) string {
	checkCount(name, shape, len(data))
	return g.addData(name, Float, shape, bytesView(data))
}

// InitFloat16 adds a FLOAT16 initializer holding data rounded to IEEE
// half precision (see InitFloat32 for external data).
func (g *Graph) InitFloat16(name string, shape []int64, data []float32) string {
	checkCount(name, shape, len(data))
	h := make([]uint16, len(data))
	for i, v := range data {
		h[i] = tensor.F32ToF16(v)
	}
	return g.addData(name, Float16, shape, bytesView(h))
}

// InitInt64 adds an INT64 initializer.
func (g *Graph) InitInt64(name string, shape []int64, data []int64) string {
	checkCount(name, shape, len(data))
	return g.Initializer(TensorInt64(name, shape, data))
}

// ConstInt64 adds a 1-D INT64 initializer holding vals, under a fresh name.
func (g *Graph) ConstInt64(vals ...int64) string {
	return g.freshInit(TensorInt64(g.Fresh("const_i64"), []int64{int64(len(vals))}, vals))
}

// ScalarInt64 adds a 0-D INT64 initializer.
func (g *Graph) ScalarInt64(v int64) string {
	return g.freshInit(TensorInt64(g.Fresh("scalar_i64"), nil, []int64{v}))
}

// ScalarFloat32 adds a 0-D FLOAT initializer.
func (g *Graph) ScalarFloat32(v float32) string {
	return g.freshInit(TensorFloat32(g.Fresh("scalar_f32"), nil, []float32{v}))
}

// NodeOut adds a node with the given output names.
func (g *Graph) NodeOut(op string, inputs, outputs []string, attrs ...Attr) {
	for _, o := range outputs {
		g.claim(o)
	}
	g.g.Node = append(g.g.Node, &onnxpb.NodeProto{
		OpType:    proto.String(op),
		Name:      proto.String(g.Fresh(op)),
		Input:     append([]string{}, inputs...),
		Output:    append([]string{}, outputs...),
		Attribute: attrs,
	})
}

// Node adds a single-output node and returns its (fresh) output name.
func (g *Graph) Node(op string, inputs []string, attrs ...Attr) string {
	out := g.Fresh(op)
	g.g.Node = append(g.g.Node, &onnxpb.NodeProto{
		OpType:    proto.String(op),
		Name:      proto.String(out),
		Input:     append([]string{}, inputs...),
		Output:    []string{out},
		Attribute: attrs,
	})
	return out
}

// Op is Node with the inputs as arguments: g.Op("Add", a, b).
func (g *Graph) Op(op string, inputs ...string) string { return g.Node(op, inputs) }

// NodeN adds a node with n outputs named freshly and returns them.
func (g *Graph) NodeN(op string, inputs []string, n int, attrs ...Attr) []string {
	outs := make([]string, n)
	for i := range outs {
		outs[i] = g.Fresh(op)
	}
	g.g.Node = append(g.g.Node, &onnxpb.NodeProto{
		OpType:    proto.String(op),
		Name:      proto.String(g.Fresh(op + "_node")),
		Input:     append([]string{}, inputs...),
		Output:    outs,
		Attribute: attrs,
	})
	return outs
}

// Model wraps the graph in a ModelProto (default-domain opset g.Opset, IR 8
// for opsets up to 18).
func (g *Graph) Model() *onnxpb.ModelProto {
	imports := []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(g.Opset)}}
	for _, d := range slices.Sorted(maps.Keys(g.domains)) {
		imports = append(imports, &onnxpb.OperatorSetIdProto{Domain: proto.String(d), Version: proto.Int64(g.domains[d])})
	}
	return &onnxpb.ModelProto{
		IrVersion:    proto.Int64(irVersion(g.Opset)),
		ProducerName: proto.String(g.Producer),
		OpsetImport:  imports,
		Graph:        g.g,
	}
}

// Marshal serialises the model; it fails when an external sink failed or
// the result would exceed protobuf's 2 GB limit (error wrapping
// ErrTooLarge; initializers in an external sink do not count).
func (g *Graph) Marshal() ([]byte, error) {
	if g.err != nil {
		return nil, g.err
	}
	return MarshalModel(g.Model())
}

// MarshalModel serialises m, checking protobuf's 2 GB limit first.
func MarshalModel(m *onnxpb.ModelProto) ([]byte, error) {
	if n := proto.Size(m); n > MaxModelBytes {
		return nil, fmt.Errorf("%w: model is %d bytes (store the weights as external data: Graph.SetExternal)", ErrTooLarge, n)
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("onnx: marshal model: %w", err)
	}
	return b, nil
}

// UnmarshalModel parses model bytes.
func UnmarshalModel(b []byte) (*onnxpb.ModelProto, error) {
	m := &onnxpb.ModelProto{}
	if err := proto.Unmarshal(b, m); err != nil {
		return nil, fmt.Errorf("onnx: parse model: %w", err)
	}
	if m.GetGraph() == nil {
		return nil, fmt.Errorf("onnx: model has no graph")
	}
	return m, nil
}
