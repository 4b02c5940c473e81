//go:build ignore

// gobytes: real entropy-coded sizes of NWC latent symbols with the Go coder
// (ortcodec/entropy), for scripts/train/export.py. Not part of the nwc build.
//
//	go run scripts/train/gobytes/main.go ENTROPY_JSON SYMBOLS_BIN
//
// SYMBOLS_BIN (little endian): u32 n_levels, then per level: u32 q, u32 n_chunks,
// i32[n_chunks*16] symbols. For each level, the level's 16 table rows (rows q*16..q*16+15
// of an entropy.json with "levels": 4, or all 16 rows otherwise) encode the symbols with
// EncodeStreams (K = 4096 chunks per stream, the ortcodec default), decode them back and
// compare. Prints one JSON object: {"levels":[{"q":..,"symbols":..,"bytes":..},...]}.
package main

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"

	"github.com/nwc-project/nwc/ortcodec/entropy"
)

type channelJSON struct {
	MedianBits uint32  `json:"median_f32_bits"`
	Offset     int64   `json:"offset"`
	CDF        []int64 `json:"cdf"`
}

type tablesJSON struct {
	Format    string        `json:"format"`
	Precision uint          `json:"precision"`
	Levels    int           `json:"levels"`
	Channels  []channelJSON `json:"channels"`
}

func die(err error) {
	fmt.Fprintln(os.Stderr, "gobytes:", err)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 3 {
		die(fmt.Errorf("usage: gobytes ENTROPY_JSON SYMBOLS_BIN"))
	}
	raw, err := os.ReadFile(os.Args[1])
	if err != nil {
		die(err)
	}
	var tj tablesJSON
	if err := json.Unmarshal(raw, &tj); err != nil {
		die(err)
	}
	const C = 16
	tables := map[int]*entropy.Tables{}
	for q := 0; q*C < len(tj.Channels); q++ {
		var med []float32
		var off []int64
		var cdf [][]int64
		for _, ch := range tj.Channels[q*C : (q+1)*C] {
			med = append(med, math.Float32frombits(ch.MedianBits))
			off = append(off, ch.Offset)
			cdf = append(cdf, ch.CDF)
		}
		t, err := entropy.NewTables(tj.Precision, med, off, cdf)
		if err != nil {
			die(err)
		}
		tables[q] = t
	}
	b, err := os.ReadFile(os.Args[2])
	if err != nil {
		die(err)
	}
	nl := int(binary.LittleEndian.Uint32(b))
	p := 4
	type res struct {
		Q       int `json:"q"`
		Symbols int `json:"symbols"`
		Bytes   int `json:"bytes"`
	}
	var out []res
	for range nl {
		q := int(binary.LittleEndian.Uint32(b[p:]))
		n := int(binary.LittleEndian.Uint32(b[p+4:])) * C
		p += 8
		syms := make([]int32, n)
		for i := range syms {
			syms[i] = int32(binary.LittleEndian.Uint32(b[p+4*i:]))
		}
		p += 4 * n
		t := tables[q]
		if len(tables) == 1 {
			t = tables[0]
		}
		payload, err := entropy.EncodeStreams(t, syms, 4096, nil, 0)
		if err != nil {
			die(err)
		}
		back, err := entropy.DecodeStreams(t, payload, n, nil, 0)
		if err != nil {
			die(err)
		}
		if !slices.Equal(back, syms) {
			die(fmt.Errorf("level %d: round trip differs", q))
		}
		out = append(out, res{q, n, len(payload)})
	}
	json.NewEncoder(os.Stdout).Encode(map[string]any{"levels": out})
}
