//go:build cgo

package ortcodec

import (
	"encoding/binary"
	"fmt"

	"github.com/nwc-project/nwc/ortcodec/entropy"
)

// DefaultStreamChunks is the number of chunks per independent entropy stream
// used by EncodeLevels: 4096 chunks = 65536 latents, ~0.02% overhead, and
// enough streams for parallel decoding of any tensor above a few hundred
// thousand weights.
const DefaultStreamChunks = 4096

func (c *Codec) checkLevels(n int, q []int64) error {
	if n != D*len(q) {
		return fmt.Errorf("%w: %d values for %d chunks", ErrInput, n, len(q))
	}
	for i, l := range q {
		if l < 0 || l >= NumLevels {
			return fmt.Errorf("%w: chunk %d has quality level %d", ErrInput, i, l)
		}
	}
	return nil
}

// Quantize rounds latents y (len(q) chunks) to integer symbols around the
// medians of each chunk's quality level.
func (c *Codec) Quantize(y []float32, q []int64, dst []int32) ([]int32, error) {
	if err := c.checkLevels(len(y), q); err != nil {
		return nil, err
	}
	if cap(dst) < len(y) {
		dst = make([]int32, len(y))
	}
	dst = dst[:len(y)]
	for i, l := range q {
		if _, err := entropy.Quantize(c.levels[l], y[i*D:(i+1)*D], dst[i*D:(i+1)*D]); err != nil {
			return nil, fmt.Errorf("ortcodec: chunk %d: %w", i, err)
		}
	}
	return dst, nil
}

// Dequantize maps symbols back to latents (float32(s) + median).
func (c *Codec) Dequantize(s []int32, q []int64, dst []float32) ([]float32, error) {
	if err := c.checkLevels(len(s), q); err != nil {
		return nil, err
	}
	if cap(dst) < len(s) {
		dst = make([]float32, len(s))
	}
	dst = dst[:len(s)]
	for i, l := range q {
		entropy.Dequantize(c.levels[l], s[i*D:(i+1)*D], dst[i*D:(i+1)*D])
	}
	return dst, nil
}

// EncodeLevels entropy-codes the symbols of len(q) chunks: the chunks of each
// quality level, in order, form one sequence coded with that level's tables
// (entropy.EncodeStreams, DefaultStreamChunks chunks per stream). Payload:
// for q = 0..3, uvarint length + the level's streams. Appended to dst.
func (c *Codec) EncodeLevels(syms []int32, q []int64, dst []byte) ([]byte, error) {
	if err := c.checkLevels(len(syms), q); err != nil {
		return nil, err
	}
	var buf []int32
	for l := int64(0); l < NumLevels; l++ {
		buf = buf[:0]
		for i, ql := range q {
			if ql == l {
				buf = append(buf, syms[i*D:(i+1)*D]...)
			}
		}
		st, err := entropy.EncodeStreams(c.levels[l], buf, DefaultStreamChunks, nil, 0)
		if err != nil {
			return nil, fmt.Errorf("ortcodec: level %d: %w", l, err)
		}
		dst = binary.AppendUvarint(dst, uint64(len(st)))
		dst = append(dst, st...)
	}
	return dst, nil
}

// DecodeLevels reverses EncodeLevels for the chunk levels q.
func (c *Codec) DecodeLevels(payload []byte, q []int64) ([]int32, error) {
	if err := c.checkLevels(D*len(q), q); err != nil {
		return nil, err
	}
	var count [NumLevels]int
	for _, l := range q {
		count[l]++
	}
	var per [NumLevels][]int32
	for l := 0; l < NumLevels; l++ {
		n, k := binary.Uvarint(payload)
		if k <= 0 || n > uint64(len(payload)-k) {
			return nil, fmt.Errorf("%w: level %d stream length", entropy.ErrCorrupt, l)
		}
		s, err := entropy.DecodeStreams(c.levels[l], payload[k:k+int(n)], D*count[l], nil, 0)
		if err != nil {
			return nil, fmt.Errorf("ortcodec: level %d: %w", l, err)
		}
		per[l] = s
		payload = payload[k+int(n):]
	}
	if len(payload) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the last level", entropy.ErrCorrupt, len(payload))
	}
	out := make([]int32, D*len(q))
	var pos [NumLevels]int
	for i, l := range q {
		copy(out[i*D:(i+1)*D], per[l][pos[l]:pos[l]+D])
		pos[l] += D
	}
	return out, nil
}
