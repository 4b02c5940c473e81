package rtn

import (
	"encoding/binary"
	"fmt"
)

// Pack builds an RTN payload (the layout of Quantizer.EncodeMatrix, decoded by
// the rtn decoder) from quantization parameters and codes chosen elsewhere, e.g.
// by GPTQ: scales and zeros are fp16 bit patterns, rows x groups of them in
// row-major order; codes holds rows*cols codes in row-major order, each
// below 1<<Bits. The values it decodes to are (code - zero) * scale in
// float32, per group.
func Pack(q Quantizer, rows, cols int, scales, zeros []uint16, codes []uint8) ([]byte, error) {
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
	out := make([]byte, rows*ng*4, q.PayloadSize(rows, cols))
	for i := range scales {
		binary.LittleEndian.PutUint16(out[4*i:], scales[i])
		binary.LittleEndian.PutUint16(out[4*i+2:], zeros[i])
	}
	packed := make([]byte, q.PayloadSize(rows, cols)-int64(len(out)))
	limit := uint8(1<<q.Bits - 1)
	for i, c := range codes {
		if c > limit {
			return nil, fmt.Errorf("rtn: code %d at %d exceeds %d bits", c, i, q.Bits)
		}
		putBits(packed, i*q.Bits, q.Bits, uint32(c))
	}
	return append(out, packed...), nil
}
