package tensor

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math"
	"testing"
)

func putF16(b []byte, f float32) { binary.LittleEndian.PutUint16(b, F32ToF16(f)) }

func dq(t *testing.T, dt DType, raw []byte) []float32 {
	t.Helper()
	n := int64(len(raw)) / dt.BlockBytes() * dt.BlockElems()
	out, err := ToFloat32(dt, raw, n, nil)
	if err != nil {
		t.Fatalf("%s: %v", dt, err)
	}
	return out
}

func expectEq(t *testing.T, dt DType, got, want []float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", dt, len(got), len(want))
	}
	for i := range want {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("%s: y[%d] = %v, want %v", dt, i, got[i], want[i])
		}
	}
}

func TestDequantQ8_0(t *testing.T) {
	b := make([]byte, 34)
	putF16(b, -0.5)
	want := make([]float32, 32)
	for j := 0; j < 32; j++ {
		q := int8(j*8 - 128)
		b[2+j] = byte(q)
		want[j] = float32(q) * -0.5
	}
	expectEq(t, Q8_0, dq(t, Q8_0, b), want)
}

func TestDequantQ4_0(t *testing.T) {
	b := make([]byte, 18)
	putF16(b, 2)
	want := make([]float32, 32)
	for j := 0; j < 16; j++ {
		b[2+j] = byte(j) | byte(15-j)<<4
		want[j] = float32(j-8) * 2
		want[j+16] = float32(7-j) * 2
	}
	expectEq(t, Q4_0, dq(t, Q4_0, b), want)
}

func TestDequantQ4_1(t *testing.T) {
	b := make([]byte, 20)
	putF16(b, 0.25)
	putF16(b[2:], -1)
	want := make([]float32, 32)
	for j := 0; j < 16; j++ {
		b[4+j] = byte(j) | byte(15-j)<<4
		want[j] = float32(j)*0.25 - 1
		want[j+16] = float32(15-j)*0.25 - 1
	}
	expectEq(t, Q4_1, dq(t, Q4_1, b), want)
}

func TestDequantQ5(t *testing.T) {
	// High bit set for elements 0..31 whose index is odd.
	qh := uint32(0xAAAAAAAA)
	b0 := make([]byte, 22)
	putF16(b0, 1)
	binary.LittleEndian.PutUint32(b0[2:], qh)
	b1 := make([]byte, 24)
	putF16(b1, 0.5)
	putF16(b1[2:], 3)
	binary.LittleEndian.PutUint32(b1[4:], qh)
	w0 := make([]float32, 32)
	w1 := make([]float32, 32)
	for j := 0; j < 16; j++ {
		lo, hi := byte(j), byte(15-j)
		b0[6+j] = lo | hi<<4
		b1[8+j] = lo | hi<<4
		q0 := int(lo) | int(qh>>uint(j)&1)<<4
		q1 := int(hi) | int(qh>>uint(j+16)&1)<<4
		w0[j], w0[j+16] = float32(q0-16), float32(q1-16)
		w1[j], w1[j+16] = float32(q0)*0.5+3, float32(q1)*0.5+3
	}
	expectEq(t, Q5_0, dq(t, Q5_0, b0), w0)
	expectEq(t, Q5_1, dq(t, Q5_1, b1), w1)
}

func TestDequantQ2_K(t *testing.T) {
	b := make([]byte, 84)
	// scales[s]: scale (low nibble) s%16, min (high nibble) 1.
	for s := 0; s < 16; s++ {
		b[s] = byte(s) | 1<<4
	}
	// Every 2-bit quant is 2 (0b10 in each pair).
	for i := 16; i < 80; i++ {
		b[i] = 0xAA
	}
	putF16(b[80:], 0.5)
	putF16(b[82:], 0.25)
	want := make([]float32, 256)
	for i := range want {
		s := i / 16
		want[i] = 0.5*float32(s)*2 - 0.25
	}
	expectEq(t, Q2_K, dq(t, Q2_K, b), want)
}

func TestDequantQ3_K(t *testing.T) {
	b := make([]byte, 110)
	// hmask all set: no -4 offset. All 2-bit quants 3.
	for i := 0; i < 32; i++ {
		b[i] = 0xFF
	}
	for i := 32; i < 96; i++ {
		b[i] = 0xFF
	}
	// All 6-bit scales = 33 (low nibble 1, high bits 2): scale-32 = 1.
	for i := 96; i < 104; i++ {
		b[i] = 0x11
	}
	for i := 104; i < 108; i++ {
		b[i] = 0xAA
	}
	putF16(b[108:], 2)
	want := make([]float32, 256)
	for i := range want {
		want[i] = 2 * 1 * 3
	}
	expectEq(t, Q3_K, dq(t, Q3_K, b), want)
	// Clear hmask: quants become 3-4 = -1.
	for i := 0; i < 32; i++ {
		b[i] = 0
	}
	for i := range want {
		want[i] = -2
	}
	expectEq(t, Q3_K, dq(t, Q3_K, b), want)
}

func TestDequantQ4_K_Q5_K(t *testing.T) {
	// Sub-block j (0..7) gets scale j+1 and min j.
	var sc [12]byte
	for j := 0; j < 4; j++ {
		sc[j] = byte(j + 1)
		sc[j+4] = byte(j)
	}
	for j := 4; j < 8; j++ {
		sc[j+4] = byte(j+1) | byte(j)<<4
	}
	b := make([]byte, 144)
	putF16(b, 0.5)
	putF16(b[2:], 1)
	copy(b[4:], sc[:])
	for i := 16; i < 144; i++ {
		b[i] = 0x93 // low nibble 3, high nibble 9
	}
	want := make([]float32, 256)
	for i := range want {
		j := i / 32
		q := float32(3)
		if j%2 == 1 {
			q = 9
		}
		want[i] = 0.5*float32(j+1)*q - float32(j)
	}
	expectEq(t, Q4_K, dq(t, Q4_K, b), want)

	b5 := make([]byte, 176)
	putF16(b5, 0.5)
	putF16(b5[2:], 1)
	copy(b5[4:], sc[:])
	for i := 16; i < 48; i++ {
		b5[i] = 0x0F // high bit set for sub-blocks 0..3
	}
	for i := 48; i < 176; i++ {
		b5[i] = 0x93
	}
	for i := range want {
		j := i / 32
		q := float32(3)
		if j%2 == 1 {
			q = 9
		}
		if j < 4 {
			q += 16
		}
		want[i] = 0.5*float32(j+1)*q - float32(j)
	}
	expectEq(t, Q5_K, dq(t, Q5_K, b5), want)
}

func TestDequantQ6_K(t *testing.T) {
	b := make([]byte, 210)
	// ql low nibbles 5, high nibbles 10; qh: all 2-bit fields 1 (0x55).
	for i := 0; i < 128; i++ {
		b[i] = 0xA5
	}
	for i := 128; i < 192; i++ {
		b[i] = 0x55
	}
	for s := 0; s < 16; s++ {
		b[192+s] = byte(int8(s - 8))
	}
	putF16(b[208:], 0.25)
	want := make([]float32, 256)
	for i := range want {
		n, l := i/128, i%128
		quarter, ll := l/32, l%32
		is := 8*n + ll/16 + 2*quarter
		lo := 5
		if quarter >= 2 {
			lo = 10
		}
		q := lo | 1<<4
		want[i] = 0.25 * float32(is-8) * float32(q-32)
	}
	expectEq(t, Q6_K, dq(t, Q6_K, b), want)
}

func TestDequantQ8_K(t *testing.T) {
	b := make([]byte, 292)
	binary.LittleEndian.PutUint32(b, math.Float32bits(0.125))
	want := make([]float32, 256)
	for j := 0; j < 256; j++ {
		b[4+j] = byte(j)
		want[j] = 0.125 * float32(int8(j))
	}
	expectEq(t, Q8_K, dq(t, Q8_K, b), want)
}

func TestDequantIQ4_NL(t *testing.T) {
	b := make([]byte, 18)
	putF16(b, 0.5)
	want := make([]float32, 32)
	for j := 0; j < 16; j++ {
		b[2+j] = byte(j) | byte(15-j)<<4
		want[j] = float32(kvaluesIQ4NL[j]) * 0.5
		want[j+16] = float32(kvaluesIQ4NL[15-j]) * 0.5
	}
	expectEq(t, IQ4_NL, dq(t, IQ4_NL, b), want)
}

func TestDequantIQ4_XS(t *testing.T) {
	b := make([]byte, 136)
	putF16(b, 0.25)
	// Sub-block ib has the 6-bit scale ls = 4*ib + 3 (low 4 bits in
	// scales_l, high 2 bits in scales_h): the scale is ls - 32.
	var sh uint16
	for ib := 0; ib < 8; ib++ {
		ls := 4*ib + 3 + 32*(ib%2)
		b[4+ib/2] |= byte(ls&0xf) << (4 * (ib % 2))
		sh |= uint16(ls>>4) << (2 * ib)
	}
	binary.LittleEndian.PutUint16(b[2:], sh)
	want := make([]float32, 256)
	for ib := 0; ib < 8; ib++ {
		ls := 4*ib + 3 + 32*(ib%2)
		for j := 0; j < 16; j++ {
			lo, hi := (j+ib)%16, (3*j+ib)%16
			b[8+16*ib+j] = byte(lo) | byte(hi)<<4
			dl := float32(0.25) * float32(ls-32)
			want[32*ib+j] = dl * float32(kvaluesIQ4NL[lo])
			want[32*ib+j+16] = dl * float32(kvaluesIQ4NL[hi])
		}
	}
	expectEq(t, IQ4_XS, dq(t, IQ4_XS, b), want)
}

func TestDequantErrors(t *testing.T) {
	if _, err := ToFloat32(IQ4_XS, make([]byte, 135), 256, nil); !errors.Is(err, ErrShape) {
		t.Errorf("short IQ4_XS block: %v", err)
	}
	if _, err := ToFloat32(IQ4_NL, make([]byte, 18), 16, nil); !errors.Is(err, ErrShape) {
		t.Errorf("partial IQ4_NL block: %v", err)
	}
	if _, err := ToFloat32(Q4_0, make([]byte, 17), 32, nil); !errors.Is(err, ErrShape) {
		t.Errorf("short block: %v", err)
	}
	if _, err := ToFloat32(Q4_K, make([]byte, 144), 32, nil); !errors.Is(err, ErrShape) {
		t.Errorf("partial block: %v", err)
	}
	if err := dequantizeGGML(F32, make([]byte, 4), make([]float32, 1)); !errors.Is(err, ErrUnsupportedDType) {
		t.Errorf("F32 through GGML path: %v", err)
	}
	if err := dequantizeGGML(Q8_0, make([]byte, 34), make([]float32, 31)); !errors.Is(err, ErrShape) {
		t.Errorf("dst mismatch: %v", err)
	}
}

// splitmix64 is the deterministic generator shared with the GGUF
// cross-check test (loader/gguf), which verified the golden hashes below
// against gguf-py's dequantize.
type splitmix64 uint64

func (s *splitmix64) next() uint64 {
	*s += 0x9e3779b97f4a7c15
	z := uint64(*s)
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// halfOffsets are the offsets of the fp16 fields in each block type.
var halfOffsets = map[DType][]int{
	Q4_0: {0}, Q4_1: {0, 2}, Q5_0: {0}, Q5_1: {0, 2}, Q8_0: {0},
	Q2_K: {80, 82}, Q3_K: {108}, Q4_K: {0, 2}, Q5_K: {0, 2}, Q6_K: {208}, IQ4_NL: {0}, IQ4_XS: {0},
}

// randomBlocks returns nb random blocks of dt whose fp16 fields are finite.
func randomBlocks(dt DType, nb int, seed uint64) []byte {
	s := splitmix64(seed)
	bb := int(dt.BlockBytes())
	b := make([]byte, nb*bb)
	for i := range b {
		b[i] = byte(s.next())
	}
	for k := 0; k < nb; k++ {
		for _, o := range halfOffsets[dt] {
			h := uint16(s.next())
			if h&0x7c00 == 0x7c00 { // inf/nan: clear one exponent bit
				h &^= 0x4000
			}
			binary.LittleEndian.PutUint16(b[k*bb+o:], h)
		}
	}
	return b
}

// goldenSHA256 of the float32 output of randomBlocks(dt, 64, 42+dt), equal to
// gguf-py 0.19.0 (see TestCrossCheckRandomBlocks in loader/gguf).
var goldenSHA256 = map[DType]string{
	Q4_0:   "f322df55100bc30e191efbf853853930bbcdf41c187096cffedde76eee17d311",
	Q4_1:   "d676ef26e891b6614ec7ab255b1cd4fd15c74be58b13a348f2e9f49a81f96121",
	Q5_0:   "c9744e79f440f1af87a5bb19132b505f99f35cf791688ca1f88cefa8de3df724",
	Q5_1:   "34bc398f851cb15e920197cb7edabb8833a02c2960240832e7f6dc6360189184",
	Q8_0:   "4d00657893f52701b27232ed014fe890edf35af105b828ee7f9706c78dc91521",
	Q2_K:   "7bf8496aab2f171403f955a253b41a5d149f04263551bcd345419a5e0c8f3d97",
	Q3_K:   "d890697723bc5f405697739f51f1ccb3c755c1962585c3a7a520d002b6c33432",
	Q4_K:   "eeab4806fbf25bb50aa387210d7b3aa00a3b84d9cd72f07a9941b51d9ec0fc15",
	Q5_K:   "bb99932ae4ea33c26b16d36d331ce0ecbd1f02a078824279568a7db59b6a57bc",
	Q6_K:   "a701a8fb8f66b00d1863ce29875e69971a215bed2d092f4ee9e9390b0891773e",
	IQ4_NL: "16001734c416031e47b4ca96af13f45582ef5b1d1096e36c1fc15569963b80e3",
	IQ4_XS: "666660ee1f476755b541c344d976f5b95581ff8d08f247b1f10287d2c4ea3d1d",
}

func TestDequantGolden(t *testing.T) {
	if len(goldenSHA256) != 12 {
		t.Fatal("golden table incomplete")
	}
	for dt, want := range goldenSHA256 {
		raw := randomBlocks(dt, 64, 42+uint64(dt))
		got := dq(t, dt, raw)
		bs := make([]byte, 4*len(got))
		for i, f := range got {
			binary.LittleEndian.PutUint32(bs[4*i:], math.Float32bits(f))
		}
		sum := sha256.Sum256(bs)
		if h := hex.EncodeToString(sum[:]); h != want {
			t.Errorf("%s: sha256 %s, want %s", dt, h, want)
		}
	}
}

func TestDequantReusesDst(t *testing.T) {
	raw := randomBlocks(Q4_K, 2, 1)
	dst := make([]float32, 1024)
	out, err := ToFloat32(Q4_K, raw, 512, dst)
	if err != nil {
		t.Fatal(err)
	}
	if &out[0] != &dst[0] || len(out) != 512 {
		t.Fatal("dst not reused")
	}
}

func BenchmarkDequantize(b *testing.B) {
	for _, dt := range []DType{Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K, IQ4_NL, IQ4_XS} {
		const n = 1 << 20
		raw := randomBlocks(dt, int(n/dt.BlockElems()), 7)
		dst := make([]float32, n)
		b.Run(dt.String(), func(b *testing.B) {
			b.SetBytes(n * 4)
			for i := 0; i < b.N; i++ {
				if _, err := ToFloat32(dt, raw, n, dst); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
