// Package loader moves tensors between model files and the .nwc container:
// it opens any supported model file as a tensor.Source (Open), compresses a
// source into a .nwc file (Compress), and reads a .nwc file back as a
// tensor.Source that decodes each tensor as it is asked for (OpenNWC).
//
// Data flow:
//
//	gguf / safetensors / onnxinit  ->  tensor.Source  ->  codec  ->  container (.nwc)
//	container (.nwc)  ->  codec  ->  tensor.Source  ->  runtime / safetensors writer
package loader

import (
	"context"
	"fmt"

	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/container"
	"github.com/nwc-project/nwc/loader/tensor"
)

// NWCFile is a .nwc container opened as a tensor.Source. Tensors are decoded
// on demand; its methods are safe for concurrent use.
type NWCFile struct {
	r        *container.Reader
	lossless *codec.Lossless
	infos    []tensor.Info
	assets   []tensor.Asset
	neural   codecSet
}

// OpenNWC opens a .nwc container: it reads the index and the (small) asset
// sections, not the tensors.
func OpenNWC(path string) (*NWCFile, error) {
	r, err := container.Open(path)
	if err != nil {
		return nil, err
	}
	f := &NWCFile{r: r, neural: codecSet{dirs: FindCodec}}
	if f.lossless, err = codec.NewLossless(); err != nil {
		r.Close()
		return nil, err
	}
	for _, e := range r.Entries() {
		switch e.Kind {
		case container.KindTensor:
			f.infos = append(f.infos, e.Info())
		case container.KindAsset:
			data, err := f.decode(e, nil)
			if err != nil {
				f.Close()
				return nil, err
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

func (f *NWCFile) decode(e container.Entry, dst []byte) ([]byte, error) {
	payload, err := f.r.ReadPayload(e)
	if err != nil {
		return nil, err
	}
	out, err := f.decodePayload(e, payload, dst)
	if err != nil {
		return nil, fmt.Errorf("nwc: %s: %s %q: %w", f.r.Name(), e.Kind, e.Name, err)
	}
	return out, nil
}

// decodePayload decodes a verified section payload with its codec. The lossy
// codecs decode to F32 and accept no other dtype.
func (f *NWCFile) decodePayload(e container.Entry, payload, dst []byte) ([]byte, error) {
	switch e.Codec {
	case codec.IDRaw, codec.IDZstd, codec.IDFloatSplit:
		return f.lossless.Decode(e.Codec, e.DType, e.RawSize, e.Params, payload, dst)
	case codec.IDRTN, codec.IDECSQ, codec.IDNWC:
		if e.DType != tensor.F32 {
			return nil, fmt.Errorf("%w: %s section with dtype %s", codec.ErrCorrupt, codec.Name(e.Codec), e.DType)
		}
	default:
		return nil, fmt.Errorf("%w: id %d (this build knows raw, zstd, float-split, rtn, ecsq, nwc)", codec.ErrUnknownCodec, e.Codec)
	}
	switch e.Codec {
	case codec.IDRTN:
		return codec.DecodeRTN(e.Shape, e.Params, payload, dst)
	case codec.IDECSQ:
		return decodeECSQ(e.Shape, e.Params, payload, dst)
	}
	c, err := f.neural.get(e.Params)
	if err != nil {
		return nil, err
	}
	w, err := decodeNeural(context.Background(), c, e.Shape, payload)
	if err != nil {
		return nil, err
	}
	return codec.F32Bytes(w, dst), nil
}

// ReadRaw decodes the named tensor to its stored bytes.
func (f *NWCFile) ReadRaw(name string, dst []byte) ([]byte, error) {
	e, err := f.r.Lookup(container.KindTensor, name)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", tensor.ErrNotFound, err)
	}
	return f.decode(e, dst)
}

// ReadFloat32 decodes the named tensor and converts it to float32.
func (f *NWCFile) ReadFloat32(name string, dst []float32) ([]float32, error) {
	e, err := f.r.Lookup(container.KindTensor, name)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", tensor.ErrNotFound, err)
	}
	raw, err := f.decode(e, nil)
	if err != nil {
		return nil, err
	}
	out, err := tensor.ToFloat32(e.DType, raw, tensor.NumElements(e.Shape), dst)
	if err != nil {
		return nil, fmt.Errorf("nwc: %s: tensor %q: %w", f.r.Name(), name, err)
	}
	return out, nil
}

// Close releases the file and the codec state.
func (f *NWCFile) Close() error {
	err := f.neural.close()
	if f.lossless != nil {
		if cerr := f.lossless.Close(); err == nil {
			err = cerr
		}
		f.lossless = nil
	}
	if f.r != nil {
		if cerr := f.r.Close(); err == nil {
			err = cerr
		}
		f.r = nil
	}
	return err
}
