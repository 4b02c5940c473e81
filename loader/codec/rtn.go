package codec

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/nwc-project/nwc/loader/tensor"
)

// IDRTN is round-to-nearest asymmetric uniform quantization (the RTN
// baseline): per output row, or per group of G consecutive input columns of a
// row, a fp16 scale and a fp16 zero point; integer codes of Bits bits,
// bit-packed. It decodes to F32.
const IDRTN uint8 = 16

// RTN quantizes [rows, cols] float32 matrices.
type RTN struct {
	Bits  int // 1..8
	Group int // columns per group; 0 = the whole row
}

// Validate checks the parameters.
func (q RTN) Validate() error {
	if q.Bits < 1 || q.Bits > 8 {
		return fmt.Errorf("rtn: bits %d outside 1..8", q.Bits)
	}
	if q.Group < 0 || q.Group > 1<<20 {
		return fmt.Errorf("rtn: group %d", q.Group)
	}
	return nil
}

func (q RTN) groupSize(cols int) int {
	if q.Group == 0 || q.Group > cols {
		return cols
	}
	return q.Group
}

// Params encodes the parameters for a section descriptor.
func (q RTN) Params() []byte {
	return binary.AppendUvarint([]byte{byte(q.Bits)}, uint64(q.Group))
}

// ParseRTNParams decodes Params.
func ParseRTNParams(p []byte) (RTN, error) {
	if len(p) < 2 {
		return RTN{}, fmt.Errorf("%w: rtn parameters of %d bytes", ErrCorrupt, len(p))
	}
	g, n := binary.Uvarint(p[1:])
	if n <= 0 || 1+n != len(p) || g > 1<<20 {
		return RTN{}, fmt.Errorf("%w: rtn parameters", ErrCorrupt)
	}
	q := RTN{Bits: int(p[0]), Group: int(g)}
	if err := q.Validate(); err != nil {
		return RTN{}, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return q, nil
}

// numGroups returns groups per row.
func (q RTN) numGroups(cols int) int {
	g := q.groupSize(cols)
	return (cols + g - 1) / g
}

// PayloadSize is the exact payload size for a [rows, cols] matrix.
func (q RTN) PayloadSize(rows, cols int) int64 {
	side := int64(rows) * int64(q.numGroups(cols)) * 4
	return side + (int64(rows)*int64(cols)*int64(q.Bits)+7)/8
}

// Quantize returns the dequantized values RTN produces for w (what Decode of
// Encode gives), without packing: used by in-memory baselines.
func (q RTN) Quantize(w []float32, rows, cols int, dst []float32) []float32 {
	payload := q.Encode(w, rows, cols)
	out, _ := q.decode(payload, rows, cols, dst)
	return out
}

// Encode quantizes w ([rows, cols], row-major) and returns the payload:
// rows x groups x (fp16 scale, fp16 zero), then the codes, LSB-first.
func (q RTN) Encode(w []float32, rows, cols int) []byte {
	gs := q.groupSize(cols)
	ng := q.numGroups(cols)
	maxq := float32(int(1)<<q.Bits - 1)
	side := make([]byte, 0, rows*ng*4)
	codes := make([]byte, (int64(rows)*int64(cols)*int64(q.Bits)+7)/8)
	bit := 0
	for r := 0; r < rows; r++ {
		row := w[r*cols : (r+1)*cols]
		for g := 0; g < ng; g++ {
			grp := row[g*gs : min((g+1)*gs, cols)]
			lo, hi := float32(0), float32(0) // the range always includes 0, as GPTQ's quantizer
			for _, v := range grp {
				lo = min(lo, v)
				hi = max(hi, v)
			}
			scale := (hi - lo) / maxq
			if scale == 0 {
				scale = 1
			}
			// Scale and zero are stored in fp16, and the codes are computed
			// with the stored values, so decode reproduces them exactly.
			hs := tensor.F32ToF16(scale)
			scale = tensor.F16ToF32(hs)
			if scale == 0 || math.IsInf(float64(scale), 0) {
				hs = tensor.F32ToF16(1)
				scale = 1
			}
			z := min(max(float32(math.RoundToEven(float64(-lo/scale))), 0), maxq)
			hz := tensor.F32ToF16(z)
			zero := tensor.F16ToF32(hz)
			side = binary.LittleEndian.AppendUint16(side, hs)
			side = binary.LittleEndian.AppendUint16(side, hz)
			for _, v := range grp {
				c := float32(math.RoundToEven(float64(v/scale))) + zero
				c = min(max(c, 0), maxq)
				putBits(codes, bit, q.Bits, uint32(c))
				bit += q.Bits
			}
		}
	}
	return append(side, codes...)
}

func putBits(b []byte, bit, n int, v uint32) {
	for i := 0; i < n; i++ {
		if v>>i&1 != 0 {
			b[(bit+i)>>3] |= 1 << ((bit + i) & 7)
		}
	}
}

func getBits(b []byte, bit, n int) uint32 {
	var v uint32
	for i := 0; i < n; i++ {
		v |= uint32(b[(bit+i)>>3]>>((bit+i)&7)&1) << i
	}
	return v
}

// Decode reconstructs the [rows, cols] matrix.
func (q RTN) decode(payload []byte, rows, cols int, dst []float32) ([]float32, error) {
	if int64(len(payload)) != q.PayloadSize(rows, cols) {
		return nil, fmt.Errorf("%w: rtn payload of %d bytes, want %d", ErrCorrupt, len(payload), q.PayloadSize(rows, cols))
	}
	gs := q.groupSize(cols)
	ng := q.numGroups(cols)
	n := rows * cols
	if cap(dst) < n {
		dst = make([]float32, n)
	}
	dst = dst[:n]
	side := payload[:rows*ng*4]
	codes := payload[rows*ng*4:]
	bit := 0
	for r := 0; r < rows; r++ {
		for g := 0; g < ng; g++ {
			o := (r*ng + g) * 4
			scale := tensor.F16ToF32(binary.LittleEndian.Uint16(side[o:]))
			zero := tensor.F16ToF32(binary.LittleEndian.Uint16(side[o+2:]))
			for c := g * gs; c < min((g+1)*gs, cols); c++ {
				dst[r*cols+c] = (float32(getBits(codes, bit, q.Bits)) - zero) * scale
				bit += q.Bits
			}
		}
	}
	return dst, nil
}

// DecodeRTN decodes an RTN payload of a tensor of the given shape to F32
// bytes (little endian) in dst.
func DecodeRTN(shape []int64, params, payload, dst []byte) ([]byte, error) {
	q, err := ParseRTNParams(params)
	if err != nil {
		return nil, err
	}
	rows, cols, err := matrixDims(shape)
	if err != nil {
		return nil, err
	}
	f, err := q.decode(payload, rows, cols, nil)
	if err != nil {
		return nil, err
	}
	return F32Bytes(f, dst), nil
}

// matrixDims views a shape as [rows, cols] (rows = product of all but the
// last dimension).
func matrixDims(shape []int64) (rows, cols int, err error) {
	if len(shape) < 1 {
		return 0, 0, fmt.Errorf("%w: a scalar cannot be a matrix", ErrCorrupt)
	}
	n := tensor.NumElements(shape)
	c := shape[len(shape)-1]
	if n < 0 || c <= 0 || n > 1<<34 {
		return 0, 0, fmt.Errorf("%w: shape %v", ErrCorrupt, shape)
	}
	return int(n / c), int(c), nil
}

// F32Bytes writes f as little-endian float32 bytes into dst (grown when too small).
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
