// Package loader moves tensors between model files and the .nwc container:
// it opens any supported model file as a tensor.Source (Open), compresses a
// source into a .nwc file (Compress), reads a .nwc file back as a
// tensor.Source that decodes each tensor as it is asked for (OpenNWC,
// NewNWC), decodes ahead of the consumer (Prefetch) and writes a decoded
// model out (Decompress).
//
// Data flow:
//
//	gguf / safetensors / onnxinit  ->  tensor.Source  ->  codec registry  ->  container (.nwc)
//	container (.nwc)  ->  codec registry  ->  tensor.Source  ->  runtime / safetensors writer
package loader

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/container"
	"github.com/nwc-project/nwc/loader/stage"
	"github.com/nwc-project/nwc/loader/tensor"
)

// NWCFile is a .nwc container opened as a tensor.Source. Tensors are decoded
// on demand, each section by the codec its id names (a registry lookup);
// its methods are safe for concurrent use.
type NWCFile struct {
	r      *container.Reader
	dec    *codec.Decoders
	infos  []tensor.Info
	assets []tensor.Asset
}

// OpenNWC opens a .nwc file: it reads the index and the (small) asset
// sections, not the tensors. env says where trained codecs live and how to
// run ONNX Runtime (the zero value: defaults).
func OpenNWC(path string, env codec.Env) (*NWCFile, error) {
	r, err := container.Open(path)
	if err != nil {
		return nil, err
	}
	return newNWC(r, env)
}

// NewNWC reads a .nwc container from r (size bytes; name is used in
// errors). Closing the NWCFile does not close r.
func NewNWC(r io.ReaderAt, size int64, name string, env codec.Env) (*NWCFile, error) {
	cr, err := container.NewReader(r, size, name)
	if err != nil {
		return nil, err
	}
	return newNWC(cr, env)
}

func newNWC(r *container.Reader, env codec.Env) (*NWCFile, error) {
	f := &NWCFile{r: r, dec: codec.NewDecoders(env)}
	for _, e := range r.Entries() {
		switch e.Kind {
		case container.KindTensor:
			f.infos = append(f.infos, e.Info())
		case container.KindAsset:
			data, err := f.decode(context.Background(), e, nil)
			if err != nil {
				return nil, errors.Join(err, f.Close())
			}
			f.assets = append(f.assets, tensor.Asset{Name: e.Name, Data: data})
		}
	}
	return f, nil
}

// Container gives access to the underlying container (index, section sizes,
// verification).
func (f *NWCFile) Container() *container.Reader { return f.r }

// Tensors lists the tensors in file order.
func (f *NWCFile) Tensors() []tensor.Info { return f.infos }

// Assets returns the model metadata stored in the file.
func (f *NWCFile) Assets() []tensor.Asset { return f.assets }

// decode reads, verifies and decodes one section.
func (f *NWCFile) decode(ctx context.Context, e container.Entry, dst []byte) ([]byte, error) {
	payload, err := f.r.ReadPayloadTimed(e, stage.From(ctx))
	if err != nil {
		return nil, err
	}
	return f.decodePayload(ctx, e, payload, dst)
}

// section describes e to its codec.
func section(e container.Entry) codec.Section {
	return codec.Section{Name: e.Name, DType: e.DType, Shape: e.Shape, RawSize: e.RawSize, Params: e.Params}
}

// decodePayload decodes the verified payload of e to its stored bytes.
func (f *NWCFile) decodePayload(ctx context.Context, e container.Entry, payload, dst []byte) ([]byte, error) {
	out, err := f.dec.Decode(ctx, e.Codec, section(e), payload, dst)
	if err == nil && int64(len(out)) != e.RawSize {
		err = fmt.Errorf("%w: decoded %d bytes, index says %d", codec.ErrCorrupt, len(out), e.RawSize)
	}
	if err != nil {
		return nil, fmt.Errorf("nwc: %s: %s %q: %w", f.r.Name(), e.Kind, e.Name, err)
	}
	return out, nil
}

// ReadTensor decodes the named tensor to its stored bytes (its Info.DType),
// reusing dst when it is large enough. Cancelling ctx stops the neural
// decoder between batches.
func (f *NWCFile) ReadTensor(ctx context.Context, name string, dst []byte) ([]byte, error) {
	e, err := f.r.Lookup(container.KindTensor, name)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", tensor.ErrNotFound, err)
	}
	return f.decode(ctx, e, dst)
}

// ReadFloat32T returns the named 2-D tensor W [m, n] as its float32
// transpose W^T [n, m] (tensor.TransposedReader): decoded straight into
// that layout when the section's codec can (nwc), else decoded and
// transposed.
func (f *NWCFile) ReadFloat32T(name string, dst []float32) ([]float32, error) {
	return f.ReadFloat32TContext(context.Background(), name, dst)
}

// ReadFloat32TContext is ReadFloat32T with a context (cancellation, stage
// timers).
func (f *NWCFile) ReadFloat32TContext(ctx context.Context, name string, dst []float32) ([]float32, error) {
	e, err := f.r.Lookup(container.KindTensor, name)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", tensor.ErrNotFound, err)
	}
	if len(e.Shape) != 2 {
		return nil, fmt.Errorf("nwc: %s: tensor %q has shape %v, not a matrix: %w", f.r.Name(), name, e.Shape, tensor.ErrShape)
	}
	payload, err := f.r.ReadPayloadTimed(e, stage.From(ctx))
	if err != nil {
		return nil, err
	}
	if e.DType == tensor.F32 {
		v, ok, err := f.dec.DecodeTransposed(ctx, e.Codec, section(e), payload, dst)
		if err != nil {
			return nil, fmt.Errorf("nwc: %s: %s %q: %w", f.r.Name(), e.Kind, e.Name, err)
		}
		if ok {
			return v, nil
		}
	}
	// The codec writes W only: decode the payload already read, transpose.
	raw, err := f.decodePayload(ctx, e, payload, nil)
	if err != nil {
		return nil, err
	}
	w, err := tensor.ToFloat32(e.DType, raw, tensor.NumElements(e.Shape), nil)
	if err != nil {
		return nil, fmt.Errorf("nwc: %s: tensor %q: %w", f.r.Name(), name, err)
	}
	return tensor.Transpose(w, int(e.Shape[0]), int(e.Shape[1]), dst), nil
}

// ReadRaw decodes the named tensor to its stored bytes.
func (f *NWCFile) ReadRaw(name string, dst []byte) ([]byte, error) {
	return f.ReadTensor(context.Background(), name, dst)
}

// ReadFloat32 decodes the named tensor and converts it to float32.
func (f *NWCFile) ReadFloat32(name string, dst []float32) ([]float32, error) {
	return tensor.ReadFloat32(f, "nwc: "+f.r.Name(), name, dst)
}

// Close releases the file and the codec state.
func (f *NWCFile) Close() error {
	var errs []error
	if f.dec != nil {
		errs = append(errs, f.dec.Close())
		f.dec = nil
	}
	if f.r != nil {
		errs = append(errs, f.r.Close())
		f.r = nil
	}
	return errors.Join(errs...)
}
