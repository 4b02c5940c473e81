// Package rtn is round-to-nearest asymmetric uniform quantization (the RTN
// baseline, and the section format GPTQ writes too): per output row, or per
// group of G consecutive input columns of a row, a fp16 scale and an
// integer zero point in [0, 2^Bits-1]; integer codes of Bits bits,
// bit-packed. It decodes to F32.
//
// Section format version 2 (written) stores the zero points packed in Bits
// bits each; version 1 (read only: files written before) stored them as
// fp16 next to each scale. Both decode to (code - zero) * scale.
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
	codec.Register(codec.Codec{Name: "rtn", ID: ID, Doc: "round-to-nearest sections (decode only; written by rtn-g*, rtn-row, gptq-g*)",
		NewDecoder: func(codec.Env) (codec.Decoder, error) { return decoder{}, nil }})
	type named struct {
		name  string
		group int
		doc   string
	}
	list := []named{{"rtn-row", 0, "round to nearest, one fp16 scale + b-bit zero per row (--bits 1..8)"}}
	for _, g := range Groups {
		list = append(list, named{fmt.Sprintf("rtn-g%d", g), g, fmt.Sprintf("round to nearest, groups of %d columns, fp16 scale + b-bit zero (--bits 1..8)", g)})
	}
	for _, c := range list {
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

// Groups are the group sizes offered as codec names (rtn-gG, gptq-gG).
var Groups = []int{32, 64, 128}

// Section format versions (Quantizer.Version).
const (
	// V1: rows x groups of (fp16 scale, fp16 zero), then the codes. Read
	// only.
	V1 = 1
	// V2: rows x groups fp16 scales, then the zero points packed in Bits
	// bits (LSB-first, padded to a byte), then the codes. Written.
	V2 = 2
	// Current is the version writers write.
	Current = V2
)

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
	// Version is the section format (0 = Current; V1 only to reproduce
	// files written before version 2).
	Version int
}

func (q Quantizer) version() int {
	if q.Version == 0 {
		return Current
	}
	return q.Version
}

// Validate checks the parameters.
func (q Quantizer) Validate() error {
	if q.Bits < 1 || q.Bits > 8 {
		return fmt.Errorf("rtn: bits %d outside 1..8", q.Bits)
	}
	if q.Group < 0 || q.Group > 1<<20 {
		return fmt.Errorf("rtn: group %d", q.Group)
	}
	if v := q.version(); v != V1 && v != V2 {
		return fmt.Errorf("rtn: section format version %d", q.Version)
	}
	return nil
}

func (q Quantizer) groupSize(cols int) int {
	if q.Group == 0 || q.Group > cols {
		return cols
	}
	return q.Group
}

// Params encodes the parameters for a section descriptor: u8 bits, uvarint
// group, then (from version 2 on) u8 version; version 1 has no version
// byte.
func (q Quantizer) Params() []byte {
	p := binary.AppendUvarint([]byte{byte(q.Bits)}, uint64(q.Group))
	if v := q.version(); v != V1 {
		p = append(p, byte(v))
	}
	return p
}

// ParseParams decodes Params. A version this build does not read is
// codec.ErrUnsupported, naming it.
func ParseParams(p []byte) (Quantizer, error) {
	if len(p) < 2 {
		return Quantizer{}, fmt.Errorf("%w: rtn parameters of %d bytes", codec.ErrCorrupt, len(p))
	}
	g, n := binary.Uvarint(p[1:])
	if n <= 0 || len(p) > 1+n+1 || g > 1<<20 {
		return Quantizer{}, fmt.Errorf("%w: rtn parameters", codec.ErrCorrupt)
	}
	q := Quantizer{Bits: int(p[0]), Group: int(g), Version: V1}
	if len(p) == 1+n+1 {
		q.Version = int(p[1+n])
		if q.Version != V2 {
			return Quantizer{}, fmt.Errorf("%w: rtn section format version %d (this build reads %d and %d)", codec.ErrUnsupported, q.Version, V1, V2)
		}
	}
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

// PayloadSize is the exact payload size for a [rows, cols] matrix: with
// P = rows x groups, version 2 takes 2P + ceil(P*Bits/8) bytes of side
// information, version 1 4P; then ceil(rows*cols*Bits/8) bytes of codes.
func (q Quantizer) PayloadSize(rows, cols int) int64 {
	return q.sideSize(rows, cols) + (int64(rows)*int64(cols)*int64(q.Bits)+7)/8
}

func (q Quantizer) sideSize(rows, cols int) int64 {
	p := int64(rows) * int64(q.numGroups(cols))
	if q.version() == V1 {
		return 4 * p
	}
	return 2*p + (p*int64(q.Bits)+7)/8
}

// side reads the per-group scales and zero points of a payload whose size
// has been checked (rows x groups each, row-major).
func (q Quantizer) side(payload []byte, rows, cols int) (scales, zeros []float32) {
	p := rows * q.numGroups(cols)
	scales = make([]float32, p)
	zeros = make([]float32, p)
	if q.version() == V1 {
		for i := range scales {
			scales[i] = tensor.F16ToF32(binary.LittleEndian.Uint16(payload[4*i:]))
			zeros[i] = tensor.F16ToF32(binary.LittleEndian.Uint16(payload[4*i+2:]))
		}
		return scales, zeros
	}
	for i := range scales {
		scales[i] = tensor.F16ToF32(binary.LittleEndian.Uint16(payload[2*i:]))
	}
	z := make([]uint8, p)
	unpack(z, payload[2*p:], q.Bits)
	for i, v := range z {
		zeros[i] = float32(v)
	}
	return scales, zeros
}

// RangeParams is the group-parameter rule shared by rtn and gptq: the
// range [lo, hi] (which must hold 0) gives the fp16 scale (hs, and its
// value scale) and the integer zero point. An empty range gets scale 1.
func RangeParams(lo, hi float32, bits int) (hs uint16, scale float32, zero uint8) {
	maxq := float32(int(1)<<bits - 1)
	scale = (hi - lo) / maxq
	if scale == 0 {
		scale = 1
	}
	// The scale is stored in fp16, and the codes are computed with the
	// stored value, so decode reproduces them exactly.
	hs = tensor.F32ToF16(scale)
	scale = tensor.F16ToF32(hs)
	if scale == 0 || math.IsInf(float64(scale), 0) {
		hs = tensor.F32ToF16(1)
		scale = 1
	}
	return hs, scale, uint8(min(max(float32(math.RoundToEven(float64(-lo/scale))), 0), maxq))
}

// Quantize returns the dequantized values RTN produces for w (what decoding
// EncodeMatrix gives), without packing: used by in-memory baselines.
func (q Quantizer) Quantize(w []float32, rows, cols int, dst []float32) []float32 {
	payload := q.EncodeMatrix(w, rows, cols)
	out, _ := q.decode(payload, rows, cols, dst)
	return out
}

// EncodeMatrix quantizes w ([rows, cols], row-major) and returns the payload
// (docs/FORMAT.md): the side information of q's version, then the codes,
// LSB-first.
func (q Quantizer) EncodeMatrix(w []float32, rows, cols int) []byte {
	gs := q.groupSize(cols)
	ng := q.numGroups(cols)
	maxq := float32(int(1)<<q.Bits - 1)
	scales := make([]uint16, rows*ng)
	zeros := make([]uint8, rows*ng)
	codes := make([]uint8, rows*cols)
	for r := 0; r < rows; r++ {
		row := w[r*cols : (r+1)*cols]
		for g := 0; g < ng; g++ {
			grp := row[g*gs : min((g+1)*gs, cols)]
			lo, hi := float32(0), float32(0) // the range always includes 0, as GPTQ's quantizer
			for _, v := range grp {
				lo = min(lo, v)
				hi = max(hi, v)
			}
			hs, scale, z := RangeParams(lo, hi, q.Bits)
			scales[r*ng+g], zeros[r*ng+g] = hs, z
			zero := float32(z)
			for i, v := range grp {
				c := float32(math.RoundToEven(float64(v/scale))) + zero
				codes[r*cols+g*gs+i] = uint8(min(max(c, 0), maxq))
			}
		}
	}
	return q.pack(rows, cols, scales, zeros, codes)
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
	scales, zeros := q.side(payload, rows, cols)
	codes := make([]uint8, n)
	unpack(codes, payload[q.sideSize(rows, cols):], q.Bits)
	t0 = st.Since(stage.Entropy, t0, int64(n))
	if cap(dst) < 4*n {
		dst = make([]byte, 4*n)
	}
	dst = dst[:4*n]
	for r := 0; r < rows; r++ {
		for g := 0; g < ng; g++ {
			scale, zero := scales[r*ng+g], zeros[r*ng+g]
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
	scales, zeros := q.side(payload, rows, cols)
	codes := payload[q.sideSize(rows, cols):]
	bit := 0
	for r := 0; r < rows; r++ {
		for g := 0; g < ng; g++ {
			scale, zero := scales[r*ng+g], zeros[r*ng+g]
			for c := g * gs; c < min((g+1)*gs, cols); c++ {
				dst[r*cols+c] = (float32(getBits(codes, bit, q.Bits)) - zero) * scale
				bit += q.Bits
			}
		}
	}
	return dst, nil
}
