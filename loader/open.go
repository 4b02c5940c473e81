package loader

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/container"
	"github.com/nwc-project/nwc/loader/gguf"
	"github.com/nwc-project/nwc/loader/onnxinit"
	"github.com/nwc-project/nwc/loader/refmodel"
	"github.com/nwc-project/nwc/loader/safetensors"
	"github.com/nwc-project/nwc/loader/tensor"
)

// Format names a model file format.
type Format string

// Formats Open recognises.
const (
	FormatNWC         Format = "nwc"
	FormatGGUF        Format = "gguf"
	FormatSafetensors Format = "safetensors"
	FormatONNX        Format = "onnx"
)

// Resolve turns a reference model name (see `nwc models`) or a path into a
// path on disk.
func Resolve(nameOrPath string) (string, error) { return refmodel.Resolve(nameOrPath) }

// Detect tells the format of the file or directory at path from its first
// bytes (directories and index files are safetensors checkpoints).
func Detect(path string) (Format, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if st.IsDir() || strings.HasSuffix(path, ".index.json") {
		return FormatSafetensors, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var head [9]byte
	n, err := io.ReadFull(f, head[:])
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	if f := sniff(head[:n], st.Size()); f != "" {
		return f, nil
	}
	if strings.EqualFold(filepath.Ext(path), ".onnx") {
		return FormatONNX, nil
	}
	return "", fmt.Errorf("%s: unrecognised model file (not .nwc, GGUF, safetensors or .onnx; starts with %q)", path, head[:n])
}

// Open opens a model by reference name or path, whatever its format, as a
// tensor.Source. A .nwc file decodes its tensors as they are read, with the
// trained codecs and ONNX Runtime settings of env (zero value: defaults).
func Open(nameOrPath string, env codec.Env) (tensor.Source, Format, error) {
	path, err := Resolve(nameOrPath)
	if err != nil {
		return nil, "", err
	}
	format, err := Detect(path)
	if err != nil {
		return nil, "", err
	}
	var src tensor.Source
	switch format {
	case FormatNWC:
		src, err = OpenNWC(path, env)
	case FormatGGUF:
		src, err = gguf.Open(path)
	case FormatSafetensors:
		src, err = safetensors.OpenPath(path)
	case FormatONNX:
		src, err = onnxinit.Open(path)
	}
	if err != nil {
		return nil, "", err
	}
	return src, format, nil
}

// OpenReaderAt opens a model held in r (size bytes) as a tensor.Source: a
// .nwc container, a GGUF file or a single safetensors file, told apart by
// their first bytes. name is used in errors. Closing the source does not
// close r.
func OpenReaderAt(r io.ReaderAt, size int64, name string, env codec.Env) (tensor.Source, Format, error) {
	var head [9]byte
	n, err := r.ReadAt(head[:], 0)
	if err != nil && err != io.EOF {
		return nil, "", fmt.Errorf("%s: %w", name, err)
	}
	var src tensor.Source
	format := sniff(head[:n], size)
	switch format {
	case FormatNWC:
		src, err = NewNWC(r, size, name, env)
	case FormatGGUF:
		src, err = gguf.NewReader(r, size, name)
	case FormatSafetensors:
		src, err = safetensors.NewReader(name, r, size)
	default:
		return nil, "", fmt.Errorf("%s: %w: unrecognised model data (not .nwc, GGUF or safetensors; starts with %q)", name, tensor.ErrUnsupported, head[:n])
	}
	if err != nil {
		return nil, "", err
	}
	return src, format, nil
}

// sniff tells the format of a file of size bytes from its first bytes
// (up to 9), or "" when they match none.
func sniff(head []byte, size int64) Format {
	switch {
	case container.HasMagic(head):
		return FormatNWC
	case len(head) >= 4 && string(head[:4]) == "GGUF":
		return FormatGGUF
	case len(head) >= 9 && head[8] == '{' && binary.LittleEndian.Uint64(head[:8]) < uint64(size):
		return FormatSafetensors
	}
	return ""
}
