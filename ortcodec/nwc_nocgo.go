//go:build !cgo

package ortcodec

import (
	"context"
	"fmt"
	"sync"

	"github.com/nwc-project/nwc/internal/ortenv"
	"github.com/nwc-project/nwc/loader/codec"
)

// errNoORT says why a build without cgo cannot run a codec's networks.
var errNoORT = fmt.Errorf("%w: the nwc neural codec needs ONNX Runtime: %w", codec.ErrUnsupported, ortenv.ErrNoCGO)

func newEncoder(codec.Config) (codec.Encoder, error) { return nil, errNoORT }

// gainDecoder decodes, without ONNX Runtime, the sections made with
// network-free codecs (KindGain: the decoder is a per-level gain, computed
// in Go exactly as in a build with cgo); a section of a codec with decoder
// networks fails with errNoORT.
type gainDecoder struct {
	env    codec.Env
	mu     sync.Mutex
	loaded map[string]*latentModel // by section parameters (name + hash)
}

func newDecoder(env codec.Env) (codec.Decoder, error) {
	return &gainDecoder{env: env, loaded: map[string]*latentModel{}}, nil
}

func (d *gainDecoder) Decode(ctx context.Context, s codec.Section, payload, dst []byte) ([]byte, error) {
	lm, err := d.modelFor(s)
	if err != nil {
		return nil, err
	}
	return decodeF32Section(s, dst, func(v []float32) ([]float32, error) {
		return lm.decodeGainMatrix(ctx, s.Shape, payload, v, false)
	})
}

// DecodeTransposed decodes a gain-coded section into the transpose of its
// matrix (codec.TransposedDecoder).
func (d *gainDecoder) DecodeTransposed(ctx context.Context, s codec.Section, payload []byte, dst []float32) ([]float32, error) {
	lm, err := d.modelFor(s)
	if err != nil {
		return nil, err
	}
	return lm.decodeGainMatrix(ctx, s.Shape, payload, dst, true)
}

// modelFor checks that s is an F32 section and returns the latent model of
// the codec it names.
func (d *gainDecoder) modelFor(s codec.Section) (*latentModel, error) {
	if err := codec.CheckF32("nwc", s); err != nil {
		return nil, err
	}
	return d.get(s.Params)
}

func (d *gainDecoder) get(params []byte) (*latentModel, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if lm, ok := d.loaded[string(params)]; ok {
		return lm, nil
	}
	fsys, name, err := findCodec(d.env, params)
	if err != nil {
		return nil, err
	}
	lm, err := loadLatentModel(fsys, name)
	if err != nil {
		return nil, err
	}
	if lm.gain == nil {
		return nil, fmt.Errorf("codec %s has decoder networks (kind %s): %w", name, KindMLP, errNoORT)
	}
	d.loaded[string(params)] = lm
	return lm, nil
}

func (d *gainDecoder) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.loaded = map[string]*latentModel{}
	return nil
}
