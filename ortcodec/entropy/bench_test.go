package entropy

import (
	"fmt"
	"testing"
)

// Benchmarks code 1M symbols (65536 chunks of 16) drawn from the tables'
// own distributions (~3.7 bits/symbol at precision 16); SetBytes counts
// one byte per symbol, so MB/s reads as Msymbols/s.
const benchN = 16 << 16

func BenchmarkEncode(b *testing.B) {
	tb := synthTables(b, 16, 16, 41)
	syms := sample(tb, benchN, 1, 0)
	var enc Encoder
	dst, _ := enc.Encode(tb, syms, nil)
	b.ReportAllocs()
	b.SetBytes(benchN)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var err error
		dst, err = enc.Encode(tb, syms, dst[:0])
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(benchN)*float64(b.N)/b.Elapsed().Seconds(), "symbols/s")
	b.ReportMetric(float64(len(dst))*8/benchN, "bits/symbol")
}

func BenchmarkDecode(b *testing.B) {
	tb := synthTables(b, 16, 16, 41)
	syms := sample(tb, benchN, 1, 0)
	buf, _ := EncodeSymbols(tb, syms, nil)
	dst := make([]int32, benchN)
	b.ReportAllocs()
	b.SetBytes(benchN)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var err error
		dst, err = DecodeSymbols(tb, buf, benchN, dst)
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(benchN)*float64(b.N)/b.Elapsed().Seconds(), "symbols/s")
}

func BenchmarkDecodeStreams(b *testing.B) {
	tb := synthTables(b, 16, 16, 41)
	syms := sample(tb, benchN, 1, 0)
	for _, w := range []int{1, 2} {
		b.Run(fmt.Sprintf("workers=%d", w), func(b *testing.B) {
			buf, _ := EncodeStreams(tb, syms, 4096, nil, 0)
			dst := make([]int32, benchN)
			b.ReportAllocs()
			b.SetBytes(benchN)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				var err error
				dst, err = DecodeStreams(tb, buf, benchN, dst, w)
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(benchN)*float64(b.N)/b.Elapsed().Seconds(), "symbols/s")
		})
	}
}
