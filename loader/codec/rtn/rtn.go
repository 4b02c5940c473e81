// Package rtn is round-to-nearest asymmetric uniform quantization (the RTN
// baseline, and the section format GPTQ writes too): per output row, or per
// group of G consecutive input columns of a row, a fp16 scale and a fp16
// zero point; integer codes of Bits bits, bit-packed. It decodes to F32.
package rtn

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"

	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/stage"
	"github.com/nwc-project/nwc/loader/tensor"
)

// ID is the section id of RTN payloads.
const ID = codec.IDRTN

func init() {
	codec.Register(codec.Codec{Name: "rtn", ID: ID, Doc: "round-to-nearest sections (decode only; written by rtn-g128, rtn-row, gptq-g128)",
		NewDecoder: func(codec.Env) (codec.Decoder, error) { return decoder{}, nil }})
	for _, c := range []struct {
		name  string
		group int
		doc   string
	}{{"rtn-g128", 128, "round to nearest, groups of 128 columns, fp16 scale+zero (--bits 1..8)"},
		{"rtn-row", 0, "round to nearest, one fp16 scale+zero per row (--bits 1..8)"}} {
		codec.Register(codec.Codec{Name: c.name, Doc: c.doc, Lossy: true,
			NewEncoder: func(cfg codec.Config) (codec.Encoder, error) {
				b, err := WholeBits(c.name, cfg.Bits)
				if err != nil {
					return nil, err
				}
				return Quantizer{Bits: b, Group: c.group}, nil
			}})
	}
}

// WholeBits checks that bits is a whole number in 1..8 (the widths RTN
// packs) for the codec called name.
func WholeBits(name string, bits float64) (int, error) {
	b := int(bits)
	if float64(b) != bits || b < 1 || b > 8 {
		return 0, fmt.Errorf("%s needs --bits as a whole number in 1..8, got %g", name, bits)
	}
	return b, nil
}

type decoder struct{}

func (decoder) Decode(ctx context.Context, s codec.Section, payload, dst []byte) ([]byte, error) {
	if err := codec.CheckF32("rtn", s); err != nil {
		return nil, err
	}
	return decodeTimed(stage.From(ctx), s.Shape, s.Params, payload, dst)
}

// Decode decodes an RTN payload of a tensor of the given shape to F32 bytes
// (little endian) in dst.
func Decode(shape []int64, params, payload, dst []byte) ([]byte, error) {
	return decodeTimed(nil, shape, params, payload, dst)
}

// decodeTimed is Decode adding the bit unpacking to stage.Entropy and the
// dequantization into dst to stage.Rescale of st (nil: not timed).
func decodeTimed(st *stage.Times, shape []int64, params, payload, dst []byte) ([]byte, error) {
	q, err := ParseParams(params)
	if err != nil {
		return nil, err
	}
	rows, cols, err := codec.MatrixDims(shape)
	if err != nil {
		return nil, err
	}
	return q.decodeBytes(st, payload, rows, cols, dst)
}

// Encode codes in.Weights (codec.Encoder).
func (q Quantizer) Encode(_ context.Context, in codec.Input) (codec.Output, error) {
	rows, cols, err := codec.MatrixDims(in.Info.Shape)
	if err != nil {
		return codec.Output{}, err
	}
	if err := q.Validate(); err != nil {
		return codec.Output{}, err
	}
	return codec.Output{ID: ID, DType: tensor.F32, Params: q.Params(), Payload: q.EncodeMatrix(in.Weights, rows, cols)}, nil
}

// Quantizer quantizes [rows, cols] float32 matrices.
type Quantizer struct {
	Bits  int // 1..8
	Group int // columns per group; 0 = the whole row
}

// Validate checks the parameters.
func (q Quantizer) Validate() error {
	if q.Bits < 1 || q.Bits > 8 {
		return fmt.Errorf("rtn: bits %d outside 1..8", q.Bits)
	}
	if q.Group < 0 || q.Group > 1<<20 {
		return fmt.Errorf("rtn: group %d", q.Group)
	}
	return nil
}

func (q Quantizer) groupSize(cols int) int {
	if q.Group == 0 || q.Group > cols {
		return cols
	}
	return q.Group
}

// Params encodes the parameters for a section descriptor.
func (q Quantizer) Params() []byte {
	return binary.AppendUvarint([]byte{byte(q.Bits)}, uint64(q.Group))
}

// ParseParams decodes Params.
func ParseParams(p []byte) (Quantizer, error) {
	if len(p) < 2 {
		return Quantizer{}, fmt.Errorf("%w: rtn parameters of %d bytes", codec.ErrCorrupt, len(p))
	}
	g, n := binary.Uvarint(p[1:])
	if n <= 0 || 1+n != len(p) || g > 1<<20 {
		return Quantizer{}, fmt.Errorf("%w: rtn parameters", codec.ErrCorrupt)
	}
	q := Quantizer{Bits: int(p[0]), Group: int(g)}
	if err := q.Validate(); err != nil {
		return Quantizer{}, fmt.Errorf("%w: %v", codec.ErrCorrupt, err)
	}
	return q, nil
}

// numGroups returns groups per row.
func (q Quantizer) numGroups(cols int) int {
	g := q.groupSize(cols)
	return (cols + g - 1) / g
}

// PayloadSize is the exact payload size for a [rows, cols] matrix.
func (q Quantizer) PayloadSize(rows, cols int) int64 {
	side := int64(rows) * int64(q.numGroups(cols)) * 4
	return side + (int64(rows)*int64(cols)*int64(q.Bits)+7)/8
}

// Quantize returns the dequantized values RTN produces for w (what decoding
// EncodeMatrix gives), without packing: used by in-memory baselines.
func (q Quantizer) Quantize(w []float32, rows, cols int, dst []float32) []float32 {
	payload := q.EncodeMatrix(w, rows, cols)
	out, _ := q.decode(payload, rows, cols, dst)
	return out
}

// EncodeMatrix quantizes w ([rows, cols], row-major) and returns the payload:
// rows x groups x (fp16 scale, fp16 zero), then the codes, LSB-first.
func (q Quantizer) EncodeMatrix(w []float32, rows, cols int) []byte {
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

// decodeBytes reconstructs the [rows, cols] matrix as little-endian float32
// bytes in dst (reused when large enough), in two passes: the codes are
// unpacked to one byte each (stage.Entropy), then dequantized group by group
// straight into dst (stage.Rescale). The values are exactly decode's.
func (q Quantizer) decodeBytes(st *stage.Times, payload []byte, rows, cols int, dst []byte) ([]byte, error) {
	if int64(len(payload)) != q.PayloadSize(rows, cols) {
		return nil, fmt.Errorf("%w: rtn payload of %d bytes, want %d", codec.ErrCorrupt, len(payload), q.PayloadSize(rows, cols))
	}
	t0 := st.Start()
	gs := q.groupSize(cols)
	ng := q.numGroups(cols)
	n := rows * cols
	side := payload[:rows*ng*4]
	codes := make([]uint8, n)
	unpack(codes, payload[rows*ng*4:], q.Bits)
	t0 = st.Since(stage.Entropy, t0, int64(n))
	if cap(dst) < 4*n {
		dst = make([]byte, 4*n)
	}
	dst = dst[:4*n]
	for r := 0; r < rows; r++ {
		for g := 0; g < ng; g++ {
			o := (r*ng + g) * 4
			scale := tensor.F16ToF32(binary.LittleEndian.Uint16(side[o:]))
			zero := tensor.F16ToF32(binary.LittleEndian.Uint16(side[o+2:]))
			for i := r*cols + g*gs; i < r*cols+min((g+1)*gs, cols); i++ {
				binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits((float32(codes[i])-zero)*scale))
			}
		}
	}
	st.Since(stage.Rescale, t0, int64(n))
	return dst, nil
}

// unpack reads len(codes) codes of bits bits each, LSB-first, from b (which
// holds at least len(codes)*bits bits).
func unpack(codes []uint8, b []byte, bits int) {
	var acc uint64
	var have int
	mask := uint64(1)<<bits - 1
	j := 0
	for i := range codes {
		for have < bits {
			acc |= uint64(b[j]) << have
			j++
			have += 8
		}
		codes[i] = uint8(acc & mask)
		acc >>= bits
		have -= bits
	}
}

// decode reconstructs the [rows, cols] matrix.
func (q Quantizer) decode(payload []byte, rows, cols int, dst []float32) ([]float32, error) {
	if int64(len(payload)) != q.PayloadSize(rows, cols) {
		return nil, fmt.Errorf("%w: rtn payload of %d bytes, want %d", codec.ErrCorrupt, len(payload), q.PayloadSize(rows, cols))
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
