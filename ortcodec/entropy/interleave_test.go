package entropy

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// TestInterleavedStreams: DecodeStreams decodes streams two at a time,
// interleaved; for 1 to 6 streams (odd counts leave one alone), with
// escapes and a short last stream, the result equals the symbols, and a
// corrupted byte in any stream is reported as that stream's error.
func TestInterleavedStreams(t *testing.T) {
	tb := synthTables(t, 16, 16, 41)
	const k = 8 // chunks per stream: 128 symbols
	for streams := 1; streams <= 6; streams++ {
		n := (streams-1)*k*16 + 37 // the last stream is short
		syms := sample(tb, n, uint64(streams), 0.05)
		for _, workers := range []int{1, 2} {
			payload, err := EncodeStreams(tb, syms, k, nil, 1)
			if err != nil {
				t.Fatal(err)
			}
			got, err := DecodeStreams(tb, payload, n, nil, workers)
			if err != nil {
				t.Fatalf("%d streams: %v", streams, err)
			}
			if !slices.Equal(got, syms) {
				t.Fatalf("%d streams, %d workers: decoded symbols differ", streams, workers)
			}
			// Corrupt the initial state of each stream in turn: the error
			// names that stream.

			for j := range streams {
				st := streamOffsets(t, payload, streams)
				bad := slices.Clone(payload)
				bad[st[j]+3] = 0 // state below 2^16 (top byte zero): corrupt
				bad[st[j]+2] = 0
				_, err := DecodeStreams(tb, bad, n, nil, workers)
				if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), fmt.Sprintf("stream %d:", j)) {
					t.Fatalf("%d streams: corrupt stream %d gave %v", streams, j, err)
				}
			}
		}
	}
}

// streamOffsets returns where each stream starts in a DecodeStreams payload.
func streamOffsets(t *testing.T, payload []byte, m int) []int {
	t.Helper()
	p := payload
	var lens []uint64
	for i := 0; i < 2+m; i++ {
		v, err := readUvarint(&p)
		if err != nil {
			t.Fatal(err)
		}
		if i >= 2 {
			lens = append(lens, v)
		}
	}
	off := len(payload) - len(p)
	out := make([]int, m)
	for j := range m {
		out[j] = off
		off += int(lens[j])
	}
	return out
}
