package lossless

import (
	"encoding/binary"
	"fmt"

	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/stage"
	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/ortcodec/entropy"
)

// block-split (section id 3): a lossless coding of the blocks of a GGML
// block-quantized tensor that separates each block's integer codes from its
// float16 fields. The codes (4-bit nibbles of Q4_0, Q4_1 and IQ4_NL; bytes of
// Q8_0) become symbols coded by the integer rANS coder of ortcodec/entropy
// with a per-tensor static frequency table stored as integers (decoding is
// exact and deterministic); the float16 fields (scales, mins), one field
// after another, are coded as a float-split payload. Payload:
//
//	u8       version (1)
//	uvarint  length of the fields payload, then the float-split payload of
//	         the nb*F float16 fields (F fields per block, field-major)
//	uvarint  L+1 frequencies (L = 16 or 256 symbols, then the escape),
//	         each >= 1, summing to 1<<blockPrecision
//	         then the entropy.EncodeStreams container of the nb*S code
//	         symbols (S per block, in stored byte order: for nibbles the low
//	         nibble of a byte before its high nibble)

// blockPrecision is the precision of the stored code frequencies.
const blockPrecision = 16

// blockStreamSymbols is the number of code symbols per rANS stream (streams
// decode in parallel).
const blockStreamSymbols = 1 << 18

// blockSplitVersion is the payload version byte.
const blockSplitVersion = 1

// blockLayout describes the blocks block-split takes: header bytes (float16
// fields) first, then the code bytes.
type blockLayout struct {
	headerBytes int  // 2 per float16 field
	codeBytes   int  // bytes of codes after the header
	nibbles     bool // two 4-bit codes per byte (else one 8-bit code)
}

func (b blockLayout) fields() int     { return b.headerBytes / 2 }
func (b blockLayout) blockBytes() int { return b.headerBytes + b.codeBytes }

// symbols is the number of codes per block.
func (b blockLayout) symbols() int {
	if b.nibbles {
		return 2 * b.codeBytes
	}
	return b.codeBytes
}

// alphabet is the number of code values; the table's escape symbol (never
// written) follows them.
func (b blockLayout) alphabet() int {
	if b.nibbles {
		return 16
	}
	return 256
}

// blockLayoutOf returns the layout of the dtypes block-split codes.
func blockLayoutOf(dt tensor.DType) (blockLayout, bool) {
	var l blockLayout
	switch dt {
	case tensor.Q4_0, tensor.IQ4_NL: // { f16 d; u8 qs[16]; }
		l = blockLayout{headerBytes: 2, codeBytes: 16, nibbles: true}
	case tensor.Q4_1: // { f16 d, m; u8 qs[16]; }
		l = blockLayout{headerBytes: 4, codeBytes: 16, nibbles: true}
	case tensor.Q8_0: // { f16 d; i8 qs[32]; }
		l = blockLayout{headerBytes: 2, codeBytes: 32}
	default:
		return blockLayout{}, false
	}
	if int64(l.blockBytes()) != dt.BlockBytes() {
		return blockLayout{}, false
	}
	return l, true
}

// encodeBlockSplit codes raw, whole blocks of dt (checked by the caller).
func (l *Lossless) encodeBlockSplit(dt tensor.DType, raw []byte) ([]byte, error) {
	bl, _ := blockLayoutOf(dt)
	bb, nf, ns := bl.blockBytes(), bl.fields(), bl.symbols()
	nb := len(raw) / bb
	fields := make([]byte, 2*nb*nf)
	syms := make([]int32, nb*ns)
	counts := make([]int64, bl.alphabet()+1) // + escape, never used
	for i := 0; i < nb; i++ {
		blk := raw[i*bb : (i+1)*bb]
		for f := 0; f < nf; f++ {
			copy(fields[2*(f*nb+i):], blk[2*f:2*f+2])
		}
		s := syms[i*ns : (i+1)*ns]
		for j, c := range blk[bl.headerBytes:] {
			if bl.nibbles {
				s[2*j], s[2*j+1] = int32(c&0xf), int32(c>>4)
			} else {
				s[j] = int32(c)
			}
		}
		for _, v := range s {
			counts[v]++
		}
	}
	freq := entropy.NormalizeFreqs(counts, 1<<blockPrecision)
	tb, err := blockTables(freq)
	if err != nil {
		return nil, err
	}
	out := []byte{blockSplitVersion}
	fp := l.encodeSplit(tensor.F16, fields)
	out = binary.AppendUvarint(out, uint64(len(fp)))
	out = append(out, fp...)
	for _, f := range freq {
		out = binary.AppendUvarint(out, uint64(f))
	}
	out, err = entropy.EncodeStreams(tb, syms, blockStreamSymbols, out, 0)
	if err != nil {
		return nil, fmt.Errorf("codec: block-split %s: %w", dt, err)
	}
	return out, nil
}

// blockTables builds the one-channel rANS tables of symbols 0..L-1 (and the
// escape) from their frequencies.
func blockTables(freq []int64) (*entropy.Tables, error) {
	cdf := make([]int64, len(freq)+1)
	for i, f := range freq {
		cdf[i+1] = cdf[i] + f
	}
	tb, err := entropy.NewTables(blockPrecision, []float32{0}, []int64{0}, [][]int64{cdf})
	if err != nil {
		return nil, fmt.Errorf("%w: block-split table: %v", codec.ErrCorrupt, err)
	}
	return tb, nil
}

// decodeBlockSplit decodes a block-split payload into rawSize bytes of dt.
func (l *Lossless) decodeBlockSplit(st *stage.Times, nst int64, dt tensor.DType, rawSize int64, payload, dst []byte) ([]byte, error) {
	bl, ok := blockLayoutOf(dt)
	if !ok {
		return nil, fmt.Errorf("%w: block-split cannot hold %s", codec.ErrCorrupt, dt)
	}
	bb, nf, ns := int64(bl.blockBytes()), bl.fields(), bl.symbols()
	if rawSize < 0 || rawSize%bb != 0 {
		return nil, fmt.Errorf("%w: %d bytes is not a whole number of %s blocks", codec.ErrCorrupt, rawSize, dt)
	}
	nb := rawSize / bb
	if nb*int64(ns) > tensor.MaxElements {
		return nil, fmt.Errorf("%w: %d %s blocks", codec.ErrCorrupt, nb, dt)
	}
	if len(payload) < 1 || payload[0] != blockSplitVersion {
		return nil, fmt.Errorf("%w: block-split version (want %d)", codec.ErrUnsupported, blockSplitVersion)
	}
	p := payload[1:]
	fl, k := binary.Uvarint(p)
	if k <= 0 || fl > uint64(len(p)-k) {
		return nil, fmt.Errorf("%w: block-split fields length", codec.ErrCorrupt)
	}
	fieldsPayload := p[k : k+int(fl)]
	p = p[k+int(fl):]
	freq := make([]int64, bl.alphabet()+1)
	var sum uint64
	for i := range freq {
		f, k := binary.Uvarint(p)
		if k <= 0 || f < 1 || f > 1<<blockPrecision {
			return nil, fmt.Errorf("%w: block-split frequency %d", codec.ErrCorrupt, i)
		}
		p = p[k:]
		freq[i] = int64(f)
		sum += f
	}
	if sum != 1<<blockPrecision {
		return nil, fmt.Errorf("%w: block-split frequencies sum to %d, want %d", codec.ErrCorrupt, sum, 1<<blockPrecision)
	}
	tb, err := blockTables(freq)
	if err != nil {
		return nil, err
	}
	fields, err := l.decodeSplit(nil, 0, tensor.F16, 2*nb*int64(nf), fieldsPayload, nil)
	if err != nil {
		return nil, fmt.Errorf("block-split fields: %w", err)
	}
	t0 := st.Start()
	syms, err := entropy.DecodeStreams(tb, p, int(nb)*ns, nil, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: block-split codes: %v", codec.ErrCorrupt, err)
	}
	t0 = st.Since(stage.Entropy, t0, nst)
	defer st.Since(stage.Rescale, t0, nst)
	if int64(cap(dst)) < rawSize {
		dst = make([]byte, rawSize)
	}
	dst = dst[:rawSize]
	esc := int32(bl.alphabet())
	for i := int64(0); i < nb; i++ {
		blk := dst[i*bb : (i+1)*bb]
		for f := 0; f < nf; f++ {
			copy(blk[2*f:2*f+2], fields[2*(int64(f)*nb+i):])
		}
		s := syms[i*int64(ns) : (i+1)*int64(ns)]
		for _, v := range s {
			if v < 0 || v >= esc {
				return nil, fmt.Errorf("%w: block-split code %d out of range in block %d", codec.ErrCorrupt, v, i)
			}
		}
		c := blk[bl.headerBytes:]
		for j := range c {
			if bl.nibbles {
				c[j] = byte(s[2*j]) | byte(s[2*j+1])<<4
			} else {
				c[j] = byte(s[j])
			}
		}
	}
	return dst, nil
}
