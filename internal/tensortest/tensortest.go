// Package tensortest is test support: an in-memory tensor.Source. It is
// imported only from _test.go files.
package tensortest

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/nwc-project/nwc/loader/tensor"
)

// MemSource is an in-memory float32 tensor.Source.
type MemSource struct {
	Infos     []tensor.Info
	Data      map[string][]float32
	AssetList []tensor.Asset
}

// Add appends a float32 tensor named name with the given shape.
func (m *MemSource) Add(name string, v []float32, shape ...int64) {
	if m.Data == nil {
		m.Data = map[string][]float32{}
	}
	m.Infos = append(m.Infos, tensor.Info{Name: name, DType: tensor.F32, Shape: shape, Size: int64(4 * len(v))})
	m.Data[name] = v
}

func (m *MemSource) Tensors() []tensor.Info { return m.Infos }
func (m *MemSource) Assets() []tensor.Asset { return m.AssetList }
func (m *MemSource) Close() error           { return nil }

func (m *MemSource) ReadRaw(name string, dst []byte) ([]byte, error) {
	v, ok := m.Data[name]
	if !ok {
		return nil, fmt.Errorf("%q: %w", name, tensor.ErrNotFound)
	}
	b := make([]byte, 4*len(v))
	for i, f := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(f))
	}
	return b, nil
}

func (m *MemSource) ReadFloat32(name string, dst []float32) ([]float32, error) {
	v, ok := m.Data[name]
	if !ok {
		return nil, fmt.Errorf("%q: %w", name, tensor.ErrNotFound)
	}
	return append(dst[:0], v...), nil
}
