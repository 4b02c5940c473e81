package tensor

import "fmt"

// Transpose writes the [cols, rows] transpose of the row-major [rows, cols]
// matrix w into dst (reused when it holds rows*cols values), in
// cache-friendly blocks, and returns it.
func Transpose(w []float32, rows, cols int, dst []float32) []float32 {
	if cap(dst) < len(w) {
		dst = make([]float32, len(w))
	}
	t := dst[:len(w)]
	const bs = 32
	for r0 := 0; r0 < rows; r0 += bs {
		r1 := min(r0+bs, rows)
		for c0 := 0; c0 < cols; c0 += bs {
			c1 := min(c0+bs, cols)
			for r := r0; r < r1; r++ {
				row := w[r*cols : (r+1)*cols]
				for c := c0; c < c1; c++ {
					t[c*rows+r] = row[c]
				}
			}
		}
	}
	return t
}

// TransposedReader is a Source that can return a 2-D tensor W [rows, cols]
// as its float32 transpose W^T [cols, rows] directly: a decoder whose
// natural output order is W's columns (the nwc codec) writes it without a
// transposing pass. dst is reused when it holds rows*cols values.
type TransposedReader interface {
	ReadFloat32T(name string, dst []float32) ([]float32, error)
}

// ReadFloat32T returns the named 2-D tensor of src as its float32
// transpose: through src's own ReadFloat32T when it has one, else read and
// transposed here.
func ReadFloat32T(src Source, name string, dst []float32) ([]float32, error) {
	if tr, ok := src.(TransposedReader); ok {
		return tr.ReadFloat32T(name, dst)
	}
	ti, ok := Find(src.Tensors(), name)
	if !ok {
		return nil, fmt.Errorf("tensor %q: %w", name, ErrNotFound)
	}
	if len(ti.Shape) != 2 {
		return nil, fmt.Errorf("tensor %q has shape %v, not a matrix: %w", name, ti.Shape, ErrShape)
	}
	w, err := src.ReadFloat32(name, nil)
	if err != nil {
		return nil, err
	}
	return Transpose(w, int(ti.Shape[0]), int(ti.Shape[1]), dst), nil
}
