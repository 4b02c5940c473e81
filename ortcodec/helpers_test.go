//go:build cgo

package ortcodec

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
)

// Test helpers: the whole coding path of one batch of chunks, used by the
// round-trip tests (the product codes tensors through encoder.Encode and
// Codec.DecodeMatrix in nwc_ort.go).

// roundTripCompress runs the whole coding path for N chunks: encoder network,
// quantization around the level medians, and EncodeLevels. q is not stored:
// the caller keeps the quality levels (side information of the container).
func roundTripCompress(c *Codec, ctx context.Context, x []float32, q []int64, dst []byte) ([]byte, error) {
	y, err := c.Encode(ctx, x, q)
	if err != nil {
		return dst, err
	}
	s, err := c.Quantize(y, q, nil)
	if err != nil {
		return dst, fmt.Errorf("ortcodec: compress: %w", err)
	}
	out, err := c.EncodeLevels(s, q, dst)
	if err != nil {
		return dst, fmt.Errorf("ortcodec: compress: %w", err)
	}
	return out, nil
}

// roundTripDecompress reverses Compress for len(q) chunks: entropy decoding,
// dequantization, decoder network. It returns len(q)*16 values.
func roundTripDecompress(c *Codec, ctx context.Context, payload []byte, q []int64) ([]float32, error) {
	s, err := c.DecodeLevels(payload, q)
	if err != nil {
		return nil, fmt.Errorf("ortcodec: decompress: %w", err)
	}
	yh, err := c.Dequantize(s, q, nil)
	if err != nil {
		return nil, err
	}
	return c.Decode(ctx, yh, q)
}

// loadDir loads the codec folder at dir on disk.
func loadDir(dir string, opts ...Option) (*Codec, error) {
	dir = filepath.Clean(dir)
	return Load(os.DirFS(filepath.Dir(dir)), filepath.Base(dir), opts...)
}
