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

// stream is the decoding state of one rANS stream.
type stream struct {
	x     uint32
	pos   int
	words []byte
	c     int // channel of the next symbol
}

// open checks a stream's framing and reads its initial state.
func open(payload []byte, c0 int) (stream, error) {
	if len(payload) < stateBytes || (len(payload)-stateBytes)%wordBytes != 0 {
		return stream{}, fmt.Errorf("%w: stream length %d", ErrCorrupt, len(payload))
	}
	x := binary.LittleEndian.Uint32(payload)
	if x < ransL {
		return stream{}, fmt.Errorf("%w: initial state %#x below 2^16", ErrCorrupt, x)
	}
	return stream{x: x, words: payload[stateBytes:], c: c0}, nil
}

// finish checks that the stream ended exactly: the encoder's initial
// state, no trailing bytes.
func (st *stream) finish() error {
	if st.x != ransL {
		return fmt.Errorf("%w: final state %#x, want %#x", ErrCorrupt, st.x, ransL)
	}
	if st.pos != len(st.words) {
		return fmt.Errorf("%w: %d trailing bytes", ErrCorrupt, len(st.words)-st.pos)
	}
	return nil
}

// decodeInto decodes len(dst) symbols from one stream; the first symbol has
// channel c0.
func decodeInto(t *Tables, payload []byte, dst []int32, c0 int) error {
	st, err := open(payload, c0)
	if err != nil {
		return err
	}
	if err := st.run(t, dst, 0); err != nil {
		return err
	}
	return st.finish()
}

// run decodes len(dst) symbols of st (i0: the index of dst[0] in the
// stream, for errors).
func (st *stream) run(t *Tables, dst []int32, i0 int) error {
	x, pos, words, c := st.x, st.pos, st.words, st.c
	prec := t.Precision
	mask := uint32(1)<<prec - 1
	shift := prec - bucketBits(prec)
	C := len(t.Channels)
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
				return fmt.Errorf("%w: truncated at symbol %d", ErrCorrupt, i0+i)
			}
			x = x<<16 | uint32(binary.LittleEndian.Uint16(words[pos:]))
			pos += wordBytes
		}
		if int32(s) == ch.n {
			var v int32
			var err error
			x, pos, v, err = getEscape(x, words, pos, ch)
			if err != nil {
				return fmt.Errorf("%w at symbol %d", err, i0+i)
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
	st.x, st.pos, st.c = x, pos, c
	return nil
}

// decodeInto2 decodes two streams (both starting at channel 0) with their
// steps interleaved: the two state updates are independent, so the CPU
// overlaps them (a single rANS stream is one long dependency chain). It
// returns which stream failed (0 or 1) with the error. The result is
// exactly that of two decodeInto calls.
func decodeInto2(t *Tables, pa []byte, da []int32, pb []byte, db []int32) (int, error) {
	a, err := open(pa, 0)
	if err != nil {
		return 0, err
	}
	b, err := open(pb, 0)
	if err != nil {
		return 1, err
	}
	prec := t.Precision
	mask := uint32(1)<<prec - 1
	shift := prec - bucketBits(prec)
	C := len(t.Channels)
	chs := t.Channels
	n := min(len(da), len(db))
	xa, posa, wa := a.x, a.pos, a.words
	xb, posb, wb := b.x, b.pos, b.words
	c := 0
	i := 0
	for ; i < n; i++ {
		ch := &chs[c]
		// stream a
		slotA := xa & mask
		sA := ch.symbolOf(slotA, shift)
		// stream b
		slotB := xb & mask
		sB := ch.symbolOf(slotB, shift)
		startA, startB := ch.CDF[sA], ch.CDF[sB]
		xa = (ch.CDF[sA+1]-startA)*(xa>>prec) + slotA - startA
		xb = (ch.CDF[sB+1]-startB)*(xb>>prec) + slotB - startB
		if xa < ransL {
			if posa+wordBytes > len(wa) {
				return 0, fmt.Errorf("%w: truncated at symbol %d", ErrCorrupt, i)
			}
			xa = xa<<16 | uint32(binary.LittleEndian.Uint16(wa[posa:]))
			posa += wordBytes
		}
		if xb < ransL {
			if posb+wordBytes > len(wb) {
				return 1, fmt.Errorf("%w: truncated at symbol %d", ErrCorrupt, i)
			}
			xb = xb<<16 | uint32(binary.LittleEndian.Uint16(wb[posb:]))
			posb += wordBytes
		}
		if int32(sA) == ch.n {
			var v int32
			if xa, posa, v, err = getEscape(xa, wa, posa, ch); err != nil {
				return 0, fmt.Errorf("%w at symbol %d", err, i)
			}
			da[i] = v
		} else {
			da[i] = ch.Offset + int32(sA)
		}
		if int32(sB) == ch.n {
			var v int32
			if xb, posb, v, err = getEscape(xb, wb, posb, ch); err != nil {
				return 1, fmt.Errorf("%w at symbol %d", err, i)
			}
			db[i] = v
		} else {
			db[i] = ch.Offset + int32(sB)
		}
		c++
		if c == C {
			c = 0
		}
	}
	a.x, a.pos, a.c = xa, posa, c
	b.x, b.pos, b.c = xb, posb, c
	if err := a.run(t, da[n:], n); err != nil {
		return 0, err
	}
	if err := b.run(t, db[n:], n); err != nil {
		return 1, err
	}
	if err := a.finish(); err != nil {
		return 0, err
	}
	if err := b.finish(); err != nil {
		return 1, err
	}
	return 0, nil
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
