package entropy

import (
	"encoding/binary"
	"fmt"
	"math/bits"
)

const (
	ransL       = uint32(1) << 16 // lower bound of the normalized state
	escLenBits  = 6               // bits coding the escape length k (0..32)
	maxEscBits  = 32
	stateBytes  = 4
	wordBytes   = 2
	maxBypassCh = 16 // largest bypass chunk, in bits
)

// Encoder encodes symbol sequences. Its zero value is ready to use; it keeps
// a scratch buffer between calls, so reuse one Encoder per goroutine. An
// Encoder is not safe for concurrent use.
type Encoder struct {
	words []uint16 // renormalization words, in encode (reverse) order
}

// EncodeSymbols encodes syms (channel of syms[i] is i % C) and appends the
// stream to dst. It is shorthand for new(Encoder).Encode.
func EncodeSymbols(t *Tables, syms []int32, dst []byte) ([]byte, error) {
	var e Encoder
	return e.Encode(t, syms, dst)
}

// Encode encodes syms (channel of syms[i] is i % C) as one rANS stream and
// appends it to dst. Values outside a channel's range are escaped; a value
// with |v| > MaxMagnitude is ErrRange.
func (e *Encoder) Encode(t *Tables, syms []int32, dst []byte) ([]byte, error) {
	x, err := e.encode(t, syms)
	if err != nil {
		return dst, err
	}
	return e.flush(x, dst), nil
}

// encode runs the coder backwards over syms, leaving words in e.words
// (reverse order), and returns the final state.
func (e *Encoder) encode(t *Tables, syms []int32) (uint32, error) {
	e.words = e.words[:0]
	C := len(t.Channels)
	prec := t.Precision
	x := ransL
	c := (len(syms) - 1) % C
	for i := len(syms) - 1; i >= 0; i-- {
		ch := &t.Channels[c]
		v := syms[i]
		idx := int64(v) - int64(ch.Offset)
		if idx < 0 || idx >= int64(ch.n) {
			if v > MaxMagnitude || v < -MaxMagnitude {
				return 0, fmt.Errorf("%w: symbol %d (index %d, channel %d) beyond +-%d", ErrRange, v, i, c, MaxMagnitude)
			}
			x = e.putEscape(x, ch, v)
			idx = int64(ch.n)
		}
		start := ch.CDF[idx]
		freq := ch.CDF[idx+1] - start
		if uint64(x) >= uint64(freq)<<(32-prec) {
			e.words = append(e.words, uint16(x))
			x >>= 16
		}
		x = (x/freq)<<prec + x%freq + start
		if c == 0 {
			c = C
		}
		c--
	}
	return x, nil
}

// putEscape codes the bypass part of an escaped value (decoded after the
// escape symbol, so encoded before it).
func (e *Encoder) putEscape(x uint32, ch *Channel, v int32) uint32 {
	var ev uint64
	lo := int64(ch.Offset)
	if int64(v) < lo {
		ev = uint64(lo-1-int64(v)) * 2
	} else {
		ev = uint64(int64(v)-lo-int64(ch.n))*2 + 1
	}
	k := uint(bits.Len64(ev))
	// Mantissa bits below the top bit, decoded low chunk first: encode the
	// high chunk first.
	if k > 1 {
		m := ev &^ (uint64(1) << (k - 1))
		nb := k - 1
		if nb > maxBypassCh {
			x = e.putBits(x, uint32(m>>maxBypassCh), nb-maxBypassCh)
			nb = maxBypassCh
		}
		x = e.putBits(x, uint32(m&(1<<maxBypassCh-1)), nb)
	}
	return e.putBits(x, uint32(k), escLenBits)
}

// putBits codes the low nb (1..16) bits of v uniformly.
func (e *Encoder) putBits(x uint32, v uint32, nb uint) uint32 {
	if uint64(x) >= uint64(1)<<(32-nb) {
		e.words = append(e.words, uint16(x))
		x >>= 16
	}
	return x<<nb | v
}

// flush appends the state and the words (in decode order) to dst.
func (e *Encoder) flush(x uint32, dst []byte) []byte {
	n := stateBytes + wordBytes*len(e.words)
	dst = growBytes(dst, n)
	out := dst[len(dst)-n:]
	binary.LittleEndian.PutUint32(out, x)
	out = out[stateBytes:]
	for i, j := len(e.words)-1, 0; i >= 0; i, j = i-1, j+2 {
		binary.LittleEndian.PutUint16(out[j:], e.words[i])
	}
	return dst
}

func growBytes(b []byte, n int) []byte {
	if cap(b)-len(b) < n {
		nb := make([]byte, len(b), len(b)+n)
		copy(nb, b)
		b = nb
	}
	return b[:len(b)+n]
}

// DecodeSymbols decodes a stream made by EncodeSymbols holding exactly n
// symbols into dst (reused when cap(dst) >= n, else allocated with length n)
// and returns dst[:n]. Any malformed payload (truncated, trailing bytes,
// wrong final state) is ErrCorrupt; the work is bounded by n and
// len(payload), and nothing beyond n symbols is allocated.
func DecodeSymbols(t *Tables, payload []byte, n int, dst []int32) ([]int32, error) {
	if n < 0 {
		return nil, fmt.Errorf("%w: negative symbol count %d", ErrCorrupt, n)
	}
	if cap(dst) < n {
		dst = make([]int32, n)
	}
	dst = dst[:n]
	if err := decodeInto(t, payload, dst, 0); err != nil {
		return nil, err
	}
	return dst, nil
}

// decodeInto decodes len(dst) symbols from one stream; the first symbol has
// channel c0.
func decodeInto(t *Tables, payload []byte, dst []int32, c0 int) error {
	if len(payload) < stateBytes || (len(payload)-stateBytes)%wordBytes != 0 {
		return fmt.Errorf("%w: stream length %d", ErrCorrupt, len(payload))
	}
	x := binary.LittleEndian.Uint32(payload)
	if x < ransL {
		return fmt.Errorf("%w: initial state %#x below 2^16", ErrCorrupt, x)
	}
	words := payload[stateBytes:]
	pos := 0
	prec := t.Precision
	mask := uint32(1)<<prec - 1
	shift := prec - bucketBits(prec)
	C := len(t.Channels)
	c := c0
	chs := t.Channels
	for i := range dst {
		ch := &chs[c]
		slot := x & mask
		s := ch.symbolOf(slot, shift)
		start := ch.CDF[s]
		freq := ch.CDF[s+1] - start
		x = freq*(x>>prec) + slot - start
		if x < ransL {
			if pos+wordBytes > len(words) {
				return fmt.Errorf("%w: truncated at symbol %d", ErrCorrupt, i)
			}
			x = x<<16 | uint32(binary.LittleEndian.Uint16(words[pos:]))
			pos += wordBytes
		}
		if int32(s) == ch.n {
			var v int32
			var err error
			x, pos, v, err = getEscape(x, words, pos, ch)
			if err != nil {
				return fmt.Errorf("%w at symbol %d", err, i)
			}
			dst[i] = v
		} else {
			dst[i] = ch.Offset + int32(s)
		}
		c++
		if c == C {
			c = 0
		}
	}
	if x != ransL {
		return fmt.Errorf("%w: final state %#x, want %#x", ErrCorrupt, x, ransL)
	}
	if pos != len(words) {
		return fmt.Errorf("%w: %d trailing bytes", ErrCorrupt, len(words)-pos)
	}
	return nil
}

func getBits(x uint32, words []byte, pos int, nb uint) (uint32, int, uint32, error) {
	v := x & (1<<nb - 1)
	x >>= nb
	if x < ransL {
		if pos+wordBytes > len(words) {
			return 0, 0, 0, fmt.Errorf("%w: truncated in escape", ErrCorrupt)
		}
		x = x<<16 | uint32(binary.LittleEndian.Uint16(words[pos:]))
		pos += wordBytes
	}
	return x, pos, v, nil
}

func getEscape(x uint32, words []byte, pos int, ch *Channel) (uint32, int, int32, error) {
	x, pos, k, err := getBits(x, words, pos, escLenBits)
	if err != nil {
		return 0, 0, 0, err
	}
	if k > maxEscBits {
		return 0, 0, 0, fmt.Errorf("%w: escape length %d", ErrCorrupt, k)
	}
	var ev uint64
	if k > 0 {
		nb := uint(k) - 1
		var lo, hi uint32
		if nb > 0 {
			c := nb
			if c > maxBypassCh {
				c = maxBypassCh
			}
			if x, pos, lo, err = getBits(x, words, pos, c); err != nil {
				return 0, 0, 0, err
			}
			if nb > maxBypassCh {
				if x, pos, hi, err = getBits(x, words, pos, nb-maxBypassCh); err != nil {
					return 0, 0, 0, err
				}
			}
		}
		ev = uint64(1)<<nb | uint64(hi)<<maxBypassCh | uint64(lo)
	}
	var v int64
	if ev&1 == 0 {
		v = int64(ch.Offset) - 1 - int64(ev/2)
	} else {
		v = int64(ch.Offset) + int64(ch.n) + int64(ev/2)
	}
	if v > MaxMagnitude || v < -MaxMagnitude {
		return 0, 0, 0, fmt.Errorf("%w: escaped value %d beyond +-%d", ErrCorrupt, v, MaxMagnitude)
	}
	return x, pos, int32(v), nil
}
