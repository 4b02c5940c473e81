package loader

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/nwc-project/nwc/loader/safetensors"
	"github.com/nwc-project/nwc/loader/tensor"
)

// DecompressOptions configures Decompress.
type DecompressOptions struct {
	// Progress, when set, is called after each tensor with bytes done and total.
	Progress func(done, total int64)
}

// outputDType is the dtype a tensor takes in a safetensors file: float and
// integer types are kept; GGML block types, which safetensors cannot hold,
// are dequantized to F32.
func outputDType(dt tensor.DType) tensor.DType {
	if dt.Quantized() {
		return tensor.F32
	}
	return dt
}

// Decompress writes every tensor of src to a safetensors file at path
// (atomically), decoding the next tensors (Prefetch) while one is written,
// and writes src's assets
// (config.json, tokenizer.json, ...) beside it as <path>.<asset name>.
func Decompress(ctx context.Context, src tensor.Source, path string, opts DecompressOptions) error {
	var infos []tensor.Info
	var total int64
	for _, ti := range src.Tensors() {
		out := ti
		out.DType = outputDType(ti.DType)
		sz, err := out.DType.StorageBytes(ti.NumElements())
		if err != nil {
			return fmt.Errorf("decompress: tensor %q: %w", ti.Name, err)
		}
		out.Size = sz
		infos = append(infos, out)
		total += sz
	}
	meta := map[string]string{"format": "pt", "nwc.source": "nwc decompress"}
	fw, err := safetensors.Create(path, infos, meta)
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			fw.Abort()
		}
	}()
	// Decode the next tensors while this one is written.
	pf := Prefetch(ctx, src, false, PrefetchOptions{})
	defer pf.Close()
	var done int64
	var raw []byte
	var f32 []float32
	for i, ti := range src.Tensors() {
		if err := ctx.Err(); err != nil {
			return err
		}
		if infos[i].DType == ti.DType {
			raw, err = pf.ReadRaw(ti.Name, raw)
		} else {
			f32, err = pf.ReadFloat32(ti.Name, f32)
			raw = tensor.F32Bytes(f32, raw)
		}
		if err != nil {
			return err
		}
		if err := fw.WriteTensor(ti.Name, raw); err != nil {
			return err
		}
		done += infos[i].Size
		if opts.Progress != nil {
			opts.Progress(done, total)
		}
	}
	if err := fw.Close(); err != nil {
		return err
	}
	ok = true
	for _, a := range src.Assets() {
		name := filepath.Base(a.Name)
		if name == "." || name == "/" || name != a.Name {
			return fmt.Errorf("decompress: asset name %q is not a plain file name", a.Name)
		}
		if err := os.WriteFile(path+"."+name, a.Data, 0o644); err != nil {
			return fmt.Errorf("decompress: %w", err)
		}
	}
	return nil
}
