package entropy

import (
	"encoding/binary"
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
)

// MaxChunksPerStream bounds K, the number of C-symbol chunks per stream.
const MaxChunksPerStream = 1 << 24

// EncodeStreams encodes syms (channel of syms[i] is i % C) as independent
// rANS streams of chunksPerStream*C symbols each (the last one may be
// shorter) and appends the container to dst:
//
//	uvarint K            chunks per stream (1..MaxChunksPerStream)
//	uvarint m            number of streams, ceil(len(syms) / (K*C)) (0 if empty)
//	uvarint len[0..m-1]  byte length of each stream
//	stream 0 .. stream m-1, each as written by EncodeSymbols
//
// All uvarints are minimal (canonical). Streams are encoded by up to workers
// goroutines (<= 0 means GOMAXPROCS); the bytes do not depend on workers.
func EncodeStreams(t *Tables, syms []int32, chunksPerStream int, dst []byte, workers int) ([]byte, error) {
	C := len(t.Channels)
	if chunksPerStream < 1 || chunksPerStream > MaxChunksPerStream {
		return dst, fmt.Errorf("entropy: chunks per stream %d outside [1, %d]", chunksPerStream, MaxChunksPerStream)
	}
	per := chunksPerStream * C
	m := (len(syms) + per - 1) / per
	bufs := make([][]byte, m)
	err := parallel(m, workers, func(j int, enc *Encoder) error {
		end := min((j+1)*per, len(syms))
		b, err := enc.Encode(t, syms[j*per:end], nil)
		if err != nil {
			return fmt.Errorf("stream %d: %w", j, err)
		}
		bufs[j] = b
		return nil
	})
	if err != nil {
		return dst, err
	}
	dst = binary.AppendUvarint(dst, uint64(chunksPerStream))
	dst = binary.AppendUvarint(dst, uint64(m))
	for _, b := range bufs {
		dst = binary.AppendUvarint(dst, uint64(len(b)))
	}
	for _, b := range bufs {
		dst = append(dst, b...)
	}
	return dst, nil
}

// DecodeStreams decodes a container written by EncodeStreams holding exactly
// n symbols into dst (reused when cap(dst) >= n) using up to workers
// goroutines (<= 0 means GOMAXPROCS). Malformed containers or streams are
// ErrCorrupt; like DecodeSymbols it never allocates beyond n symbols (plus one
// length per stream, at most n of them).
func DecodeStreams(t *Tables, payload []byte, n int, dst []int32, workers int) ([]int32, error) {
	if n < 0 {
		return nil, fmt.Errorf("%w: negative symbol count %d", ErrCorrupt, n)
	}
	C := len(t.Channels)
	p := payload
	k, err := readUvarint(&p)
	if err != nil {
		return nil, err
	}
	if k < 1 || k > MaxChunksPerStream {
		return nil, fmt.Errorf("%w: chunks per stream %d", ErrCorrupt, k)
	}
	per := int(k) * C
	want := (n + per - 1) / per
	m, err := readUvarint(&p)
	if err != nil {
		return nil, err
	}
	if m != uint64(want) {
		return nil, fmt.Errorf("%w: %d streams, want %d for %d symbols", ErrCorrupt, m, want, n)
	}
	// Each stream takes at least 4 bytes and each length at least one: a
	// cheap bound before allocating the offsets.
	if uint64(len(p)) < m*(stateBytes+1) {
		return nil, fmt.Errorf("%w: %d bytes cannot hold %d streams", ErrCorrupt, len(p), m)
	}
	offs := make([]int, want+1)
	total := uint64(0)
	for j := 0; j < want; j++ {
		l, err := readUvarint(&p)
		if err != nil {
			return nil, err
		}
		total += l
		if total > uint64(len(payload)) {
			return nil, fmt.Errorf("%w: stream %d length %d beyond payload", ErrCorrupt, j, l)
		}
		offs[j+1] = int(total)
	}
	if total != uint64(len(p)) {
		return nil, fmt.Errorf("%w: streams take %d bytes, %d present", ErrCorrupt, total, len(p))
	}
	if cap(dst) < n {
		dst = make([]int32, n)
	}
	dst = dst[:n]
	// Streams two at a time, interleaved (decodeInto2); a last odd one alone.
	err = parallel((want+1)/2, workers, func(k int, _ *Encoder) error {
		j := 2 * k
		da := dst[j*per : min((j+1)*per, n)]
		if j+1 == want {
			if err := decodeInto(t, p[offs[j]:offs[j+1]], da, 0); err != nil {
				return fmt.Errorf("stream %d: %w", j, err)
			}
			return nil
		}
		db := dst[(j+1)*per : min((j+2)*per, n)]
		if which, err := decodeInto2(t, p[offs[j]:offs[j+1]], da, p[offs[j+1]:offs[j+2]], db); err != nil {
			return fmt.Errorf("stream %d: %w", j+which, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return dst, nil
}

// readUvarint reads one canonical uvarint from *p and advances it.
func readUvarint(p *[]byte) (uint64, error) {
	v, w := binary.Uvarint(*p)
	if w <= 0 {
		return 0, fmt.Errorf("%w: bad varint", ErrCorrupt)
	}
	var tmp [binary.MaxVarintLen64]byte
	if binary.PutUvarint(tmp[:], v) != w {
		return 0, fmt.Errorf("%w: non-minimal varint", ErrCorrupt)
	}
	if v > math.MaxInt32 {
		return 0, fmt.Errorf("%w: varint %d too large", ErrCorrupt, v)
	}
	*p = (*p)[w:]
	return v, nil
}

// parallel runs fn(j) for j in [0, m) on up to workers goroutines and
// returns the error of the lowest failing j. Each goroutine owns one Encoder.
func parallel(m, workers int, fn func(j int, enc *Encoder) error) error {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	workers = min(workers, m)
	if workers <= 1 {
		var enc Encoder
		for j := 0; j < m; j++ {
			if err := fn(j, &enc); err != nil {
				return err
			}
		}
		return nil
	}
	var (
		next   atomic.Int64
		mu     sync.Mutex
		firstJ = m
		first  error
		wg     sync.WaitGroup
	)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var enc Encoder
			for {
				j := int(next.Add(1) - 1)
				if j >= m {
					return
				}
				if err := fn(j, &enc); err != nil {
					mu.Lock()
					if j < firstJ {
						firstJ, first = j, err
					}
					mu.Unlock()
					next.Store(int64(m)) // stop handing out work
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}
