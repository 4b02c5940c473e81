package ecsq

import (
	"context"
	"math"
	"testing"
)

// FuzzDecode feeds arbitrary payloads and shapes to Decode. It must never
// panic; on success it returns exactly m*n values, and the result does not
// depend on the number of workers.
func FuzzDecode(f *testing.F) {
	for _, c := range []struct {
		m, n int
		step float64
		syms int
	}{{1, 1, 0.5, 0}, {3, 7, 0.1, 5}, {4, 40, 1, 16}, {8, 33, 0.02, 0}} {
		res, err := EncodeFactor(context.Background(), randW(c.m, c.n, 1), c.m, c.n, nil, c.step, Options{StreamSymbols: c.syms})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(res.Payload, uint8(c.m), uint8(c.n))
	}
	for _, c := range [][2]int{{2, 9}, {5, 33}} { // version 2, every level present
		lv := make([]uint8, c[1])
		lv[0], lv[1], lv[2] = 3, 2, 1
		res, err := EncodeFactor(context.Background(), randW(c[0], c[1], 2), c[0], c[1], nil, 0.1, Options{Levels: lv, StreamSymbols: 5})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(res.Payload, uint8(c[0]), uint8(c[1]))
	}
	f.Add([]byte{1, 0, 0, 0x80, 0x3f, 0, 0x3c, 0, 1, 0xff, 0xff, 3, 1, 1, 1, 6, 0, 0, 1, 0}, uint8(1), uint8(1))
	f.Fuzz(func(t *testing.T, payload []byte, m8, n8 uint8) {
		if len(payload) > 1<<15 {
			return
		}
		m, n := int(m8), int(n8)
		got, err := DecodeWorkers(payload, m, n, nil, 1)
		if err != nil {
			return
		}
		if len(got) != m*n {
			t.Fatalf("decoded %d values for %d x %d", len(got), m, n)
		}
		again, err := DecodeWorkers(payload, m, n, nil, 4)
		if err != nil {
			t.Fatalf("second decode failed: %v", err)
		}
		for i := range got {
			if math.Float32bits(got[i]) != math.Float32bits(again[i]) {
				t.Fatalf("value %d differs across workers", i)
			}
		}
	})
}
