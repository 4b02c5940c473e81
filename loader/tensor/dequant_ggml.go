package tensor

import (
	"encoding/binary"
	"fmt"
	"math"
)

// This file ports the reference dequantize_row_* kernels of llama.cpp's
// ggml-quants.c. Every value is computed in float32 with the same operations,
// in the same order, as the reference C code, so the results are bit-identical
// to ggml's (and to the numpy implementation in the gguf Python package).
//
// Go's specification allows x*y+z to be fused into one FMA instruction (and
// the compiler does so on arm64, ppc64, s390x and amd64 with GOAMD64=v3).
// ggml's reference kernels round the product first, so every product that
// feeds an addition is wrapped in an explicit float32() conversion, which
// forbids fusion.

// qkK is the super-block size of the k-quants (QK_K).
const qkK = 256

func f16(b []byte) float32 { return F16ToF32(binary.LittleEndian.Uint16(b)) }

// dequantizeGGML converts GGML block-quantized data to float32. raw holds
// whole blocks and dst exactly the corresponding number of elements.
func dequantizeGGML(dt DType, raw []byte, dst []float32) error {
	be, bb := dt.BlockElems(), dt.BlockBytes()
	if be <= 1 || bb <= 0 {
		return fmt.Errorf("%w: %s is not a GGML block type", ErrUnsupportedDType, dt)
	}
	nb := int64(len(raw)) / bb
	if int64(len(raw)) != nb*bb || int64(len(dst)) != nb*be {
		return fmt.Errorf("%w: %s: %d bytes / %d elements are not whole blocks", ErrShape, dt, len(raw), len(dst))
	}
	var fn func(x []byte, y []float32)
	switch dt {
	case Q8_0:
		fn = dequantQ8_0
	case Q4_0:
		fn = dequantQ4_0
	case Q4_1:
		fn = dequantQ4_1
	case Q5_0:
		fn = dequantQ5_0
	case Q5_1:
		fn = dequantQ5_1
	case Q2_K:
		fn = dequantQ2_K
	case Q3_K:
		fn = dequantQ3_K
	case Q4_K:
		fn = dequantQ4_K
	case Q5_K:
		fn = dequantQ5_K
	case Q6_K:
		fn = dequantQ6_K
	case Q8_K:
		fn = dequantQ8_K
	case IQ4_NL:
		fn = dequantIQ4_NL
	case IQ4_XS:
		fn = dequantIQ4_XS
	default:
		return fmt.Errorf("%w: %s dequantization not implemented", ErrUnsupportedDType, dt)
	}
	for i := int64(0); i < nb; i++ {
		fn(raw[i*bb:(i+1)*bb], dst[i*be:(i+1)*be])
	}
	return nil
}

// block_q8_0 { ggml_half d; int8_t qs[32]; }
func dequantQ8_0(x []byte, y []float32) {
	d := f16(x[0:])
	qs := x[2:34]
	y = y[:32]
	for j := range y {
		y[j] = float32(int8(qs[j])) * d
	}
}

// block_q4_0 { ggml_half d; uint8_t qs[16]; }
func dequantQ4_0(x []byte, y []float32) {
	d := f16(x[0:])
	qs := x[2:18]
	y = y[:32]
	for j := 0; j < 16; j++ {
		x0 := int32(qs[j]&0x0F) - 8
		x1 := int32(qs[j]>>4) - 8
		y[j] = float32(x0) * d
		y[j+16] = float32(x1) * d
	}
}

// block_q4_1 { ggml_half d; ggml_half m; uint8_t qs[16]; }
func dequantQ4_1(x []byte, y []float32) {
	d := f16(x[0:])
	m := f16(x[2:])
	qs := x[4:20]
	y = y[:32]
	for j := 0; j < 16; j++ {
		x0 := int32(qs[j] & 0x0F)
		x1 := int32(qs[j] >> 4)
		y[j] = float32(float32(x0)*d) + m
		y[j+16] = float32(float32(x1)*d) + m
	}
}

// block_q5_0 { ggml_half d; uint8_t qh[4]; uint8_t qs[16]; }
func dequantQ5_0(x []byte, y []float32) {
	d := f16(x[0:])
	qh := binary.LittleEndian.Uint32(x[2:])
	qs := x[6:22]
	y = y[:32]
	for j := 0; j < 16; j++ {
		xh0 := uint8((qh>>uint(j))<<4) & 0x10
		xh1 := uint8(qh>>uint(j+12)) & 0x10
		x0 := int32(qs[j]&0x0F|xh0) - 16
		x1 := int32(qs[j]>>4|xh1) - 16
		y[j] = float32(x0) * d
		y[j+16] = float32(x1) * d
	}
}

// block_q5_1 { ggml_half d; ggml_half m; uint8_t qh[4]; uint8_t qs[16]; }
func dequantQ5_1(x []byte, y []float32) {
	d := f16(x[0:])
	m := f16(x[2:])
	qh := binary.LittleEndian.Uint32(x[4:])
	qs := x[8:24]
	y = y[:32]
	for j := 0; j < 16; j++ {
		xh0 := uint8((qh>>uint(j))<<4) & 0x10
		xh1 := uint8(qh>>uint(j+12)) & 0x10
		x0 := int32(qs[j]&0x0F | xh0)
		x1 := int32(qs[j]>>4 | xh1)
		y[j] = float32(float32(x0)*d) + m
		y[j+16] = float32(float32(x1)*d) + m
	}
}

// block_q2_K { uint8_t scales[16]; uint8_t qs[64]; ggml_half d; ggml_half dmin; }
func dequantQ2_K(x []byte, y []float32) {
	scales := x[0:16]
	q := x[16:80]
	d := f16(x[80:])
	min := f16(x[82:])
	y = y[:qkK]
	is := 0
	o := 0
	for n := 0; n < qkK; n += 128 {
		shift := uint(0)
		for j := 0; j < 4; j++ {
			sc := scales[is]
			is++
			dl := d * float32(sc&0xF)
			ml := min * float32(sc>>4)
			for l := 0; l < 16; l++ {
				y[o] = float32(dl*float32(int8((q[l]>>shift)&3))) - ml
				o++
			}
			sc = scales[is]
			is++
			dl = d * float32(sc&0xF)
			ml = min * float32(sc>>4)
			for l := 0; l < 16; l++ {
				y[o] = float32(dl*float32(int8((q[l+16]>>shift)&3))) - ml
				o++
			}
			shift += 2
		}
		q = q[32:]
	}
}

// block_q3_K { uint8_t hmask[32]; uint8_t qs[64]; uint8_t scales[12]; ggml_half d; }
func dequantQ3_K(x []byte, y []float32) {
	const kmask1 = 0x03030303
	const kmask2 = 0x0f0f0f0f
	hm := x[0:32]
	q := x[32:96]
	sb := x[96:108]
	dAll := f16(x[108:])
	y = y[:qkK]

	var aux [4]uint32
	aux[0] = binary.LittleEndian.Uint32(sb[0:])
	aux[1] = binary.LittleEndian.Uint32(sb[4:])
	tmp := binary.LittleEndian.Uint32(sb[8:])
	aux[2] = ((aux[0] >> 4) & kmask2) | (((tmp >> 4) & kmask1) << 4)
	aux[3] = ((aux[1] >> 4) & kmask2) | (((tmp >> 6) & kmask1) << 4)
	aux[0] = (aux[0] & kmask2) | (((tmp >> 0) & kmask1) << 4)
	aux[1] = (aux[1] & kmask2) | (((tmp >> 2) & kmask1) << 4)
	var scales [16]int8
	for i, a := range aux {
		scales[4*i+0] = int8(a)
		scales[4*i+1] = int8(a >> 8)
		scales[4*i+2] = int8(a >> 16)
		scales[4*i+3] = int8(a >> 24)
	}

	m := uint8(1)
	is := 0
	o := 0
	for n := 0; n < qkK; n += 128 {
		shift := uint(0)
		for j := 0; j < 4; j++ {
			dl := dAll * float32(int32(scales[is])-32)
			is++
			for l := 0; l < 16; l++ {
				v := int32(int8((q[l] >> shift) & 3))
				if hm[l]&m == 0 {
					v -= 4
				}
				y[o] = dl * float32(v)
				o++
			}
			dl = dAll * float32(int32(scales[is])-32)
			is++
			for l := 0; l < 16; l++ {
				v := int32(int8((q[l+16] >> shift) & 3))
				if hm[l+16]&m == 0 {
					v -= 4
				}
				y[o] = dl * float32(v)
				o++
			}
			shift += 2
			m <<= 1
		}
		q = q[32:]
	}
}

// getScaleMinK4 is ggml's get_scale_min_k4: the 6-bit scale and min of
// sub-block j from the 12 packed scale bytes of a Q4_K/Q5_K block.
func getScaleMinK4(j int, q []byte) (d, m uint8) {
	if j < 4 {
		return q[j] & 63, q[j+4] & 63
	}
	d = (q[j+4] & 0xF) | ((q[j-4] >> 6) << 4)
	m = (q[j+4] >> 4) | ((q[j-0] >> 6) << 4)
	return d, m
}

// block_q4_K { ggml_half d; ggml_half dmin; uint8_t scales[12]; uint8_t qs[128]; }
func dequantQ4_K(x []byte, y []float32) {
	d := f16(x[0:])
	min := f16(x[2:])
	scales := x[4:16]
	q := x[16:144]
	y = y[:qkK]
	is := 0
	o := 0
	for j := 0; j < qkK; j += 64 {
		sc, m := getScaleMinK4(is+0, scales)
		d1 := d * float32(sc)
		m1 := min * float32(m)
		sc, m = getScaleMinK4(is+1, scales)
		d2 := d * float32(sc)
		m2 := min * float32(m)
		for l := 0; l < 32; l++ {
			y[o+l] = float32(d1*float32(q[l]&0xF)) - m1
		}
		for l := 0; l < 32; l++ {
			y[o+32+l] = float32(d2*float32(q[l]>>4)) - m2
		}
		o += 64
		q = q[32:]
		is += 2
	}
}

// block_q5_K { ggml_half d; ggml_half dmin; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; }
func dequantQ5_K(x []byte, y []float32) {
	d := f16(x[0:])
	min := f16(x[2:])
	scales := x[4:16]
	qh := x[16:48]
	ql := x[48:176]
	y = y[:qkK]
	is := 0
	o := 0
	u1, u2 := uint8(1), uint8(2)
	for j := 0; j < qkK; j += 64 {
		sc, m := getScaleMinK4(is+0, scales)
		d1 := d * float32(sc)
		m1 := min * float32(m)
		sc, m = getScaleMinK4(is+1, scales)
		d2 := d * float32(sc)
		m2 := min * float32(m)
		for l := 0; l < 32; l++ {
			v := int32(ql[l] & 0xF)
			if qh[l]&u1 != 0 {
				v += 16
			}
			y[o+l] = float32(d1*float32(v)) - m1
		}
		for l := 0; l < 32; l++ {
			v := int32(ql[l] >> 4)
			if qh[l]&u2 != 0 {
				v += 16
			}
			y[o+32+l] = float32(d2*float32(v)) - m2
		}
		o += 64
		ql = ql[32:]
		is += 2
		u1 <<= 2
		u2 <<= 2
	}
}

// block_q6_K { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; ggml_half d; }
func dequantQ6_K(x []byte, y []float32) {
	ql := x[0:128]
	qh := x[128:192]
	sc := x[192:208]
	d := f16(x[208:])
	y = y[:qkK]
	for n := 0; n < qkK; n += 128 {
		yy := y[n : n+128]
		for l := 0; l < 32; l++ {
			is := l / 16
			q1 := int32(int8(ql[l+0]&0xF|((qh[l]>>0)&3)<<4)) - 32
			q2 := int32(int8(ql[l+32]&0xF|((qh[l]>>2)&3)<<4)) - 32
			q3 := int32(int8(ql[l+0]>>4|((qh[l]>>4)&3)<<4)) - 32
			q4 := int32(int8(ql[l+32]>>4|((qh[l]>>6)&3)<<4)) - 32
			yy[l+0] = float32(d*float32(int8(sc[is+0]))) * float32(q1)
			yy[l+32] = float32(d*float32(int8(sc[is+2]))) * float32(q2)
			yy[l+64] = float32(d*float32(int8(sc[is+4]))) * float32(q3)
			yy[l+96] = float32(d*float32(int8(sc[is+6]))) * float32(q4)
		}
		ql = ql[64:]
		qh = qh[32:]
		sc = sc[8:]
	}
}

// block_q8_K { float d; int8_t qs[256]; int16_t bsums[16]; }
func dequantQ8_K(x []byte, y []float32) {
	d := math.Float32frombits(binary.LittleEndian.Uint32(x[0:]))
	qs := x[4 : 4+qkK]
	y = y[:qkK]
	for j := range y {
		y[j] = d * float32(int8(qs[j]))
	}
}

// kvaluesIQ4NL is the non-linear 4-bit codebook of IQ4_NL and IQ4_XS
// (kvalues_iq4nl in ggml-common.h).
var kvaluesIQ4NL = [16]int8{-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113}

// block_iq4_nl { ggml_half d; uint8_t qs[16]; }
func dequantIQ4_NL(x []byte, y []float32) {
	d := f16(x[0:])
	qs := x[2:18]
	y = y[:32]
	for j := 0; j < 16; j++ {
		y[j] = d * float32(kvaluesIQ4NL[qs[j]&0xf])
		y[j+16] = d * float32(kvaluesIQ4NL[qs[j]>>4])
	}
}

// block_iq4_xs { ggml_half d; uint16_t scales_h; uint8_t scales_l[4]; uint8_t qs[128]; }
func dequantIQ4_XS(x []byte, y []float32) {
	d := f16(x[0:])
	scalesH := binary.LittleEndian.Uint16(x[2:])
	scalesL := x[4:8]
	qs := x[8:136]
	y = y[:qkK]
	for ib := 0; ib < qkK/32; ib++ {
		ls := int32(scalesL[ib/2]>>(4*(ib%2))&0xf) | int32((scalesH>>(2*ib))&3)<<4
		dl := d * float32(ls-32)
		q := qs[16*ib : 16*ib+16]
		yy := y[32*ib : 32*ib+32]
		for j := 0; j < 16; j++ {
			yy[j] = dl * float32(kvaluesIQ4NL[q[j]&0xf])
			yy[j+16] = dl * float32(kvaluesIQ4NL[q[j]>>4])
		}
	}
}
