package entropy

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// fuzzTables: 16 channels, precision 12, 9 in-range symbols; small enough
// that random payloads often decode a few symbols.
func fuzzTables(t testing.TB) *Tables { return synthTables(t, 16, 12, 9) }

// FuzzDecode feeds arbitrary payloads to both decoders. They must never
// panic, must return exactly n symbols on success, and a successful decode
// must be the canonical encoding of what it decoded (re-encoding gives the
// same bytes).
func FuzzDecode(f *testing.F) {
	tb := fuzzTables(f)
	for _, n := range []int{0, 1, 17, 300} {
		syms := sample(tb, n, uint64(n), 0.1)
		raw, _ := EncodeSymbols(tb, syms, nil)
		f.Add(raw, uint16(n), false)
		st, _ := EncodeStreams(tb, syms, 3, nil, 1)
		f.Add(st, uint16(n), true)
	}
	f.Add([]byte{0, 0, 1, 0}, uint16(0), false)
	f.Add([]byte{1, 0, 0xff, 0xff, 0xff, 0xff}, uint16(5), true)
	f.Fuzz(func(t *testing.T, payload []byte, n16 uint16, streams bool) {
		if len(payload) > 1<<14 {
			return
		}
		n := int(n16 % 4096)
		if !streams {
			got, err := DecodeSymbols(tb, payload, n, nil)
			if err != nil {
				return
			}
			if len(got) != n {
				t.Fatalf("decoded %d symbols, want %d", len(got), n)
			}
			re, err := EncodeSymbols(tb, got, nil)
			if err != nil {
				t.Fatalf("re-encode: %v", err)
			}
			if !bytes.Equal(re, payload) {
				t.Fatalf("re-encoding differs:\n%x\n%x", re, payload)
			}
			return
		}
		got, err := DecodeStreams(tb, payload, n, nil, 2)
		if err != nil {
			return
		}
		if len(got) != n {
			t.Fatalf("decoded %d symbols, want %d", len(got), n)
		}
		k, _ := binary.Uvarint(payload)
		re, err := EncodeStreams(tb, got, int(k), nil, 1)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if !bytes.Equal(re, payload) {
			t.Fatalf("stream re-encoding differs:\n%x\n%x", re, payload)
		}
	})
}

// FuzzRoundTrip encodes symbols derived from the input (small values, with
// occasional escapes up to MaxMagnitude) and requires an exact round trip
// through both containers.
func FuzzRoundTrip(f *testing.F) {
	tb := fuzzTables(f)
	f.Add([]byte{0, 1, 2, 3, 250, 128, 127}, uint8(1))
	f.Add(bytes.Repeat([]byte{0x80, 0x7f, 0xff, 0x01}, 100), uint8(7))
	f.Fuzz(func(t *testing.T, data []byte, k uint8) {
		if len(data) > 1<<14 {
			data = data[:1<<14] // keep executions (and minimization) fast
		}
		syms := make([]int32, 0, len(data))
		for i := 0; i < len(data); i++ {
			b := int32(int8(data[i]))
			if b == -128 && i+4 < len(data) { // far escape from the next 4 bytes
				v := int32(binary.LittleEndian.Uint32(data[i+1:]))
				v %= MaxMagnitude + 1
				syms = append(syms, v)
				i += 4
				continue
			}
			syms = append(syms, b/8)
		}
		raw, err := EncodeSymbols(tb, syms, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeSymbols(tb, raw, len(syms), nil)
		if err != nil {
			t.Fatal(err)
		}
		if !slicesEqual(got, syms) {
			t.Fatal("raw round trip differs")
		}
		st, err := EncodeStreams(tb, syms, int(k%16)+1, nil, 2)
		if err != nil {
			t.Fatal(err)
		}
		got, err = DecodeStreams(tb, st, len(syms), got, 3)
		if err != nil {
			t.Fatal(err)
		}
		if !slicesEqual(got, syms) {
			t.Fatal("stream round trip differs")
		}
	})
}
