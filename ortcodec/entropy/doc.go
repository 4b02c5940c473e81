// Package entropy is the table-driven entropy coder of nwc's neural codecs:
// integer CDF tables (entropy.json, format nwc-cdf-v1), quantization of
// latents around per-channel medians, and a rANS coder with an escape for
// values outside a channel's table. It is pure Go, integer only on the coding
// path, and bit-exact across machines and GOMAXPROCS.
//
// # Coder
//
// rANS with a 32-bit state x kept in [2^16, 2^32) and 16-bit
// renormalization (one conditional word per step, precision <= 16). A symbol
// with frequency f and cumulative start b under total M = 2^precision is
// encoded as
//
//	if x >= f << (32-precision) { emit low 16 bits of x; x >>= 16 }
//	x = (x/f)<<precision + x%f + b
//
// and decoded as
//
//	slot = x & (M-1); s = slotTable[slot]
//	x = f_s*(x>>precision) + slot - b_s
//	if x < 2^16 { x = x<<16 | next 16-bit word }
//
// The encoder starts from x = 2^16 and walks the symbols backwards; the
// decoder walks forwards and must end with x == 2^16 having consumed every
// byte, otherwise the stream is ErrCorrupt.
//
// # Stream layout
//
// One stream is: the final encoder state (uint32, little endian), then the
// renormalization words (uint16, little endian) in the order the decoder reads
// them. Symbols are interleaved: symbol i uses channel i % C.
//
// # Escape
//
// Each CDF row has L in-range symbols (values offset..offset+L-1) and a last
// escape symbol. A value v outside the range is coded as the escape symbol
// followed by bypass bits (uniform, coded in the same rANS state with
// frequency 1 out of 2^k, k <= 16):
//
//	e = 2*(offset-1-v)      if v < offset         (even)
//	e = 2*(v-offset-L) + 1  if v >= offset+L      (odd)
//	k = bitlen(e) in 6 bits (0..32), then the k-1 bits of e below its top bit,
//	    low 16 bits first in chunks of at most 16 bits.
//
// |v| <= MaxMagnitude, so e < 2^32. Decoded escape lengths above 32 and
// values beyond MaxMagnitude are ErrCorrupt.
//
// # Parallel streams
//
// EncodeStreams cuts the symbol sequence into independent streams of K chunks
// (K*C symbols) each; see EncodeStreams for the container layout.
package entropy

import "errors"

// Errors returned by this package. They are wrapped with context (file name,
// channel, stream index), so test with errors.Is.
var (
	// ErrBadCDF: an entropy table is malformed (not starting at 0, not
	// strictly increasing, not ending at 1<<precision, out-of-range sizes).
	ErrBadCDF = errors.New("entropy: bad CDF table")
	// ErrCorrupt: a payload is truncated, has trailing bytes, or does not
	// decode to the encoder's initial state.
	ErrCorrupt = errors.New("entropy: corrupt payload")
	// ErrRange: a value cannot be coded (not finite, or |s| > MaxMagnitude).
	ErrRange = errors.New("entropy: value out of codable range")
)
