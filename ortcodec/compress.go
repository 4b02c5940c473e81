package ortcodec

import (
	"context"
	"fmt"

	"github.com/nwc-project/nwc/ortcodec/entropy"
)

// DefaultStreamChunks is the number of chunks per independent entropy stream
// used by Compress: 4096 chunks = 65536 latents, ~0.02% overhead, and enough
// streams for parallel decoding of any tensor above a few hundred thousand
// weights.
const DefaultStreamChunks = 4096

// Compress runs the whole coding path for N chunks: encoder network,
// quantization around the channel medians, and rANS coding into independent
// streams of DefaultStreamChunks chunks (entropy.EncodeStreams layout). The
// payload is appended to dst. q is not stored: the caller keeps the quality
// levels (they are side information of the container).
func (c *Codec) Compress(ctx context.Context, x []float32, q []int64, dst []byte) ([]byte, error) {
	y, err := c.Encode(ctx, x, q)
	if err != nil {
		return dst, err
	}
	s, err := entropy.Quantize(c.tables, y, nil)
	if err != nil {
		return dst, fmt.Errorf("ortcodec: compress: %w", err)
	}
	out, err := entropy.EncodeStreams(c.tables, s, DefaultStreamChunks, dst, 0)
	if err != nil {
		return dst, fmt.Errorf("ortcodec: compress: %w", err)
	}
	return out, nil
}

// Decompress reverses Compress for len(q) chunks: entropy decoding (streams
// in parallel), dequantization, decoder network. It returns len(q)*16
// values.
func (c *Codec) Decompress(ctx context.Context, payload []byte, q []int64) ([]float32, error) {
	s, err := entropy.DecodeStreams(c.tables, payload, D*len(q), nil, 0)
	if err != nil {
		return nil, fmt.Errorf("ortcodec: decompress: %w", err)
	}
	return c.Decode(ctx, entropy.Dequantize(c.tables, s, nil), q)
}
