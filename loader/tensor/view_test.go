package tensor

import (
	"encoding/binary"
	"math"
	"testing"
)

func TestFloat32ViewSharesBytes(t *testing.T) {
	b := make([]byte, 4*3+1)
	v, ok := Float32View(b, 3)
	if !ok {
		t.Skip("no float32 view on this machine (big endian)")
	}
	v[0], v[1], v[2] = 1.5, -2, float32(math.Inf(1))
	for i, want := range []float32{1.5, -2, float32(math.Inf(1))} {
		if got := math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:])); got != want {
			t.Fatalf("value %d: bytes hold %v, want %v", i, got, want)
		}
	}
	if _, ok := Float32View(b[1:], 3); ok {
		t.Fatal("an unaligned view was accepted")
	}
	if _, ok := Float32View(b, 4); ok {
		t.Fatal("a view longer than the bytes was accepted")
	}
}
