// Package f16 is the float16 codec: every weight of a block linear rounded
// to IEEE half precision (round to nearest even), stored as 2 bytes little
// endian. A 16-bit reference point for rate-distortion tables: what plain
// rounding costs at 16 bits/weight. It decodes to F32.
package f16

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"

	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/stage"
	"github.com/nwc-project/nwc/loader/tensor"
)

// ID is the section id of f16 payloads.
const ID = codec.IDF16

func init() {
	codec.Register(codec.Codec{Name: "f16", ID: ID, Lossy: true,
		Doc:        "round the block linears to float16, 16 bits/weight (no --bits)",
		NewEncoder: func(codec.Config) (codec.Encoder, error) { return coder{}, nil },
		NewDecoder: func(codec.Env) (codec.Decoder, error) { return coder{}, nil }})
}

type coder struct{}

// Encode rounds in.Weights to float16.
func (coder) Encode(_ context.Context, in codec.Input) (codec.Output, error) {
	if int64(len(in.Weights)) != in.Info.NumElements() {
		return codec.Output{}, fmt.Errorf("f16: %d weights for shape %v", len(in.Weights), in.Info.Shape)
	}
	p := make([]byte, 2*len(in.Weights))
	for i, v := range in.Weights {
		binary.LittleEndian.PutUint16(p[2*i:], tensor.F32ToF16(v))
	}
	return codec.Output{ID: ID, DType: tensor.F32, Payload: p}, nil
}

// Decode widens the float16 payload to float32 bytes (stage.Rescale: there
// is no entropy stage).
func (coder) Decode(ctx context.Context, s codec.Section, payload, dst []byte) ([]byte, error) {
	if err := codec.CheckF32("f16", s); err != nil {
		return nil, err
	}
	if len(s.Params) != 0 {
		return nil, fmt.Errorf("%w: f16 takes no parameters, got %d bytes", codec.ErrCorrupt, len(s.Params))
	}
	n := s.RawSize / 4
	if int64(len(payload)) != 2*n {
		return nil, fmt.Errorf("%w: f16 payload of %d bytes, want %d", codec.ErrCorrupt, len(payload), 2*n)
	}
	st := stage.From(ctx)
	t0 := st.Start()
	if int64(cap(dst)) < 4*n {
		dst = make([]byte, 4*n)
	}
	dst = dst[:4*n]
	for i := int64(0); i < n; i++ {
		f := tensor.F16ToF32(binary.LittleEndian.Uint16(payload[2*i:]))
		binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(f))
	}
	st.Since(stage.Rescale, t0, n)
	return dst, nil
}
