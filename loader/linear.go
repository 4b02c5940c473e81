package loader

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/ortcodec"
	"github.com/nwc-project/nwc/ortcodec/ecsq"
	"github.com/nwc-project/nwc/ortcodec/gptq"
	"github.com/nwc-project/nwc/ortcodec/ldlq"
)

// HessianFunc returns H = X^T X (n x n, row-major) of the input of the named
// linear weight, or nil for the identity (no calibration data).
type HessianFunc func(name string, n int) ([]float64, error)

// linearCoder codes one transformer-block linear weight W [m, n].
type linearCoder interface {
	// encode returns the codec id, its parameters and the payload.
	encode(ctx context.Context, w []float32, m, n int, h []float64) (id uint8, params, payload []byte, err error)
	// usesH reports whether the coder needs H (so it is worth loading).
	usesH() bool
	// close releases what the coder holds.
	close() error
}

// Lossy codec names for CompressOptions.Codec.
var lossyCodecNames = []string{"nwc", "nwc:NAME", "rtn-g128", "rtn-row", "gptq-g128", "ecsq"}

// newLinearCoder parses a codec name and its bits setting; nil means
// lossless only. block is the LDLQ feedback block of nwc and ecsq (0:
// DefaultFeedbackBlock).
func newLinearCoder(name string, bits float64, block int) (linearCoder, error) {
	if block < 0 || block > ldlq.MaxN {
		return nil, fmt.Errorf("compress: feedback block %d out of range", block)
	}
	if block == 0 {
		block = DefaultFeedbackBlock
	}
	whole := func() (int, error) {
		b := int(bits)
		if float64(b) != bits || b < 1 || b > 8 {
			return 0, fmt.Errorf("compress: %s needs a whole number of bits in 1..8, got %g", name, bits)
		}
		return b, nil
	}
	if name == "nwc" || strings.HasPrefix(name, "nwc:") {
		return newNeuralCoder(strings.TrimPrefix(strings.TrimPrefix(name, "nwc"), ":"), bits, block)
	}
	switch name {
	case "lossless":
		return nil, nil
	case "rtn-g128", "rtn-row":
		b, err := whole()
		if err != nil {
			return nil, err
		}
		q := codec.RTN{Bits: b}
		if name == "rtn-g128" {
			q.Group = 128
		}
		return rtnCoder{q}, nil
	case "gptq-g128":
		b, err := whole()
		if err != nil {
			return nil, err
		}
		return gptqCoder{bits: b}, nil
	case "ecsq":
		if !(bits > 0 && bits <= 16) {
			return nil, fmt.Errorf("compress: ecsq needs 0 < bits <= 16, got %g", bits)
		}
		return ecsqCoder{bits: bits, block: block}, nil
	}
	return nil, fmt.Errorf("compress: unknown codec %q (available: lossless, %s)", name, strings.Join(lossyCodecNames, ", "))
}

type rtnCoder struct{ q codec.RTN }

func (c rtnCoder) close() error { return nil }
func (c rtnCoder) usesH() bool  { return false }
func (c rtnCoder) encode(_ context.Context, w []float32, m, n int, _ []float64) (uint8, []byte, []byte, error) {
	return codec.IDRTN, c.q.Params(), c.q.Encode(w, m, n), nil
}

type gptqCoder struct{ bits int }

func (c gptqCoder) close() error { return nil }
func (c gptqCoder) usesH() bool  { return true }
func (c gptqCoder) encode(ctx context.Context, w []float32, m, n int, h []float64) (uint8, []byte, []byte, error) {
	res, err := gptq.Quantize(ctx, w, m, n, h, gptq.Options{Bits: c.bits, Group: 128, Workers: 1})
	if err != nil {
		return 0, nil, nil, err
	}
	return codec.IDRTN, res.Codec.Params(), res.Payload, nil
}

type ecsqCoder struct {
	bits  float64
	block int // LDLQ feedback block
}

func (c ecsqCoder) close() error { return nil }
func (c ecsqCoder) usesH() bool  { return true }
func (c ecsqCoder) encode(ctx context.Context, w []float32, m, n int, h []float64) (uint8, []byte, []byte, error) {
	f, err := ldlq.NewFactor(h, n, ldlq.Options{Workers: 1, BlockSize: c.block})
	if err != nil {
		return 0, nil, nil, err
	}
	res, err := ecsq.StepForBits(ctx, w, m, n, f, c.bits, ecsq.Options{Workers: 1}, ecsq.SearchOptions{})
	if err != nil {
		return 0, nil, nil, err
	}
	return codec.IDECSQ, []byte{ecsq.Version}, res.Payload, nil
}

// decodeECSQ decodes an ECSQ section to F32 bytes.
func decodeECSQ(shape []int64, params, payload, dst []byte) ([]byte, error) {
	if len(params) != 1 || params[0] != ecsq.Version {
		return nil, fmt.Errorf("%w: ecsq parameters %v", codec.ErrCorrupt, params)
	}
	if len(shape) != 2 || shape[0] <= 0 || shape[1] <= 0 || shape[0]*shape[1] > 1<<34 {
		return nil, fmt.Errorf("%w: ecsq shape %v", codec.ErrCorrupt, shape)
	}
	f, err := ecsq.Decode(payload, int(shape[0]), int(shape[1]), nil)
	if err != nil {
		return nil, err
	}
	return codec.F32Bytes(f, dst), nil
}

// CodecLabel names a codec setting for reports: "rtn-g128 4" etc.
func CodecLabel(name string, bits float64) string {
	if name == "lossless" {
		return name
	}
	return name + " " + strconv.FormatFloat(bits, 'g', -1, 64)
}

// newNeuralCoder loads the named codec (or, with no name, the shipped codec
// whose measured rate is closest to bits).
func newNeuralCoder(name string, bits float64, block int) (*nwcCoder, error) {
	var dir string
	var err error
	if name == "" {
		var ci CodecInfo
		if ci, err = CodecForBits(bits); err != nil {
			return nil, fmt.Errorf("compress: %w", err)
		}
		dir = ci.Dir
	} else if dir, err = FindCodec(name); err != nil {
		return nil, fmt.Errorf("compress: %w", err)
	}
	nc, err := IdentifyCodec(dir)
	if err != nil {
		return nil, fmt.Errorf("compress: %w", err)
	}
	c, err := ortcodec.Load(dir)
	if err != nil {
		return nil, fmt.Errorf("compress: %w", err)
	}
	return &nwcCoder{nc: nc, c: c, block: block}, nil
}
