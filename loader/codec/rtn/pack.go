package rtn

import (
	"encoding/binary"
	"fmt"

	"github.com/nwc-project/nwc/loader/tensor"
)

// Pack builds an RTN payload (the layout of Quantizer.EncodeMatrix, decoded by
// the rtn decoder) from quantization parameters and codes chosen elsewhere, e.g.
// by GPTQ: scales are fp16 bit patterns and zeros integers below 1<<Bits,
// rows x groups of each in row-major order; codes holds rows*cols codes in
// row-major order, each below 1<<Bits. The values it decodes to are
// (code - zero) * scale in float32, per group.
func Pack(q Quantizer, rows, cols int, scales []uint16, zeros, codes []uint8) ([]byte, error) {
	if err := q.Validate(); err != nil {
		return nil, err
	}
	if rows < 1 || cols < 1 || int64(rows)*int64(cols) > 1<<34 {
		return nil, fmt.Errorf("rtn: pack shape %d x %d", rows, cols)
	}
	ng := q.numGroups(cols)
	if len(scales) != rows*ng || len(zeros) != rows*ng || len(codes) != rows*cols {
		return nil, fmt.Errorf("rtn: pack %d scales, %d zeros, %d codes for %d x %d with %d groups per row",
			len(scales), len(zeros), len(codes), rows, cols, ng)
	}
	limit := uint8(1<<q.Bits - 1)
	for i, z := range zeros {
		if z > limit {
			return nil, fmt.Errorf("rtn: zero point %d at %d exceeds %d bits", z, i, q.Bits)
		}
	}
	for i, c := range codes {
		if c > limit {
			return nil, fmt.Errorf("rtn: code %d at %d exceeds %d bits", c, i, q.Bits)
		}
	}
	return q.pack(rows, cols, scales, zeros, codes), nil
}

// pack is Pack on checked arguments.
func (q Quantizer) pack(rows, cols int, scales []uint16, zeros, codes []uint8) []byte {
	out := make([]byte, q.PayloadSize(rows, cols))
	side := q.sideSize(rows, cols)
	if q.version() == V1 {
		for i := range scales {
			binary.LittleEndian.PutUint16(out[4*i:], scales[i])
			binary.LittleEndian.PutUint16(out[4*i+2:], tensor.F32ToF16(float32(zeros[i])))
		}
	} else {
		for i := range scales {
			binary.LittleEndian.PutUint16(out[2*i:], scales[i])
		}
		packBits(out[2*len(scales):side], zeros, q.Bits)
	}
	packBits(out[side:], codes, q.Bits)
	return out
}

// packBits writes the values, bits bits each, LSB-first, into b (zeroed,
// large enough): the inverse of unpack.
func packBits(b []byte, vals []uint8, bits int) {
	var acc uint64
	var have, j int
	for _, v := range vals {
		acc |= uint64(v) << have
		have += bits
		for have >= 8 {
			b[j] = byte(acc)
			j++
			acc >>= 8
			have -= 8
		}
	}
	if have > 0 {
		b[j] = byte(acc)
	}
}
