package safetensors

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"github.com/nwc-project/nwc/loader/tensor"
)

// Writer writes a safetensors stream. The header comes first, so all tensor
// infos are given up front to NewWriter; the tensors are then written with
// WriteTensor in the declared order.
type Writer struct {
	w     io.Writer
	infos []tensor.Info
	next  int
	err   error // sticky
	done  bool
}

// ErrWriter: a Writer was used wrongly (tensor out of order, wrong size,
// missing tensors at Close).
var ErrWriter = errors.New("safetensors: writer")

// NewWriter validates infos, writes the header to w and returns a Writer that
// expects the tensors of infos in that order. The data of the tensors is laid
// out contiguously in the same order. metadata becomes the "__metadata__" map
// (omitted when empty).
func NewWriter(w io.Writer, infos []tensor.Info, metadata map[string]string) (*Writer, error) {
	hdr, err := encodeHeader(infos, metadata)
	if err != nil {
		return nil, err
	}
	var lenBuf [8]byte
	binary.LittleEndian.PutUint64(lenBuf[:], uint64(len(hdr)))
	if _, err := w.Write(lenBuf[:]); err != nil {
		return nil, fmt.Errorf("safetensors: writing header: %w", err)
	}
	if _, err := w.Write(hdr); err != nil {
		return nil, fmt.Errorf("safetensors: writing header: %w", err)
	}
	return &Writer{w: w, infos: append([]tensor.Info(nil), infos...)}, nil
}

// encodeHeader builds the JSON header, padded with spaces so that the data
// starts at a multiple of 8 bytes (as the reference implementation does).
func encodeHeader(infos []tensor.Info, metadata map[string]string) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteByte('{')
	first := true
	comma := func() {
		if !first {
			buf.WriteByte(',')
		}
		first = false
	}
	if len(metadata) > 0 {
		b, err := json.Marshal(metadata) // sorted keys
		if err != nil {
			return nil, fmt.Errorf("safetensors: metadata: %w", err)
		}
		comma()
		buf.WriteString(`"__metadata__":`)
		buf.Write(b)
	}
	seen := make(map[string]bool, len(infos))
	var off int64
	for _, ti := range infos {
		if ti.Name == "" || ti.Name == "__metadata__" {
			return nil, fmt.Errorf("%w: invalid tensor name %q", ErrWriter, ti.Name)
		}
		if seen[ti.Name] {
			return nil, fmt.Errorf("%w: tensor %q: duplicate name", ErrWriter, ti.Name)
		}
		seen[ti.Name] = true
		dt, ok := DTypeName(ti.DType)
		if !ok {
			return nil, fmt.Errorf("safetensors: tensor %q: %w: safetensors cannot store %s", ti.Name, tensor.ErrUnsupportedDType, ti.DType)
		}
		if err := tensor.CheckShape(ti.DType, ti.Shape, ti.Size); err != nil {
			return nil, fmt.Errorf("safetensors: tensor %q: %w", ti.Name, err)
		}
		name, err := json.Marshal(ti.Name)
		if err != nil {
			return nil, fmt.Errorf("safetensors: tensor %q: %w", ti.Name, err)
		}
		comma()
		buf.Write(name)
		buf.WriteString(`:{"dtype":"`)
		buf.WriteString(dt)
		buf.WriteString(`","shape":[`)
		for i, d := range ti.Shape {
			if i > 0 {
				buf.WriteByte(',')
			}
			buf.WriteString(strconv.FormatInt(d, 10))
		}
		buf.WriteString(`],"data_offsets":[`)
		buf.WriteString(strconv.FormatInt(off, 10))
		buf.WriteByte(',')
		off += ti.Size
		buf.WriteString(strconv.FormatInt(off, 10))
		buf.WriteString(`]}`)
	}
	buf.WriteByte('}')
	for buf.Len()%8 != 0 {
		buf.WriteByte(' ')
	}
	if buf.Len() > MaxHeaderSize {
		return nil, fmt.Errorf("safetensors: header of %d bytes exceeds the limit %d", buf.Len(), MaxHeaderSize)
	}
	return buf.Bytes(), nil
}

// WriteTensor writes the bytes of the next tensor. name must be the next name
// of the declared infos and raw must hold exactly its Size bytes.
func (w *Writer) WriteTensor(name string, raw []byte) error {
	if w.err != nil {
		return w.err
	}
	if w.done {
		return fmt.Errorf("%w: WriteTensor after Close", ErrWriter)
	}
	if w.next >= len(w.infos) {
		return fmt.Errorf("%w: tensor %q: all declared tensors were already written", ErrWriter, name)
	}
	ti := w.infos[w.next]
	if name != ti.Name {
		return fmt.Errorf("%w: tensor %q written out of order, expected %q", ErrWriter, name, ti.Name)
	}
	if int64(len(raw)) != ti.Size {
		return fmt.Errorf("%w: tensor %q: %d bytes given, %d declared", ErrWriter, name, len(raw), ti.Size)
	}
	if _, err := w.w.Write(raw); err != nil {
		w.err = fmt.Errorf("safetensors: writing tensor %q: %w", name, err)
		return w.err
	}
	w.next++
	return nil
}

// Close checks that every declared tensor was written. It does not close the
// underlying writer.
func (w *Writer) Close() error {
	if w.err != nil {
		return w.err
	}
	if w.done {
		return nil
	}
	if w.next != len(w.infos) {
		return fmt.Errorf("%w: %d of %d tensors written, next is %q", ErrWriter, w.next, len(w.infos), w.infos[w.next].Name)
	}
	w.done = true
	return nil
}

// FileWriter writes a safetensors file atomically: the data goes to a
// temporary file in the same directory, which Close syncs and renames to the
// final path. Abort (or a failed Close) removes the temporary file.
type FileWriter struct {
	*Writer
	path string
	tmp  *os.File
	bw   *bufio.Writer
}

// Create starts writing the safetensors file path with the given tensors and
// metadata; see NewWriter and FileWriter.
func Create(path string, infos []tensor.Info, metadata map[string]string) (*FileWriter, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	// CreateTemp makes the file 0600; give the result ordinary permissions.
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	fw := &FileWriter{path: path, tmp: tmp, bw: bufio.NewWriterSize(tmp, 1<<20)}
	w, err := NewWriter(fw.bw, infos, metadata)
	if err != nil {
		fw.Abort()
		return nil, err
	}
	fw.Writer = w
	return fw, nil
}

// Close finishes the file: it checks that all tensors were written, flushes,
// syncs and renames the temporary file to the final path.
func (fw *FileWriter) Close() error {
	if fw.tmp == nil {
		return fmt.Errorf("%w: file already closed", ErrWriter)
	}
	err := fw.Writer.Close()
	if err == nil {
		err = fw.bw.Flush()
	}
	if err == nil {
		err = fw.tmp.Sync()
	}
	if err == nil {
		err = fw.tmp.Close()
		if err == nil {
			err = os.Rename(fw.tmp.Name(), fw.path)
		}
		if err != nil {
			os.Remove(fw.tmp.Name())
		}
		fw.tmp = nil
		if err == nil {
			syncDir(filepath.Dir(fw.path))
		}
	} else {
		fw.Abort()
	}
	if err != nil {
		return fmt.Errorf("safetensors: %s: %w", fw.path, err)
	}
	return nil
}

// Abort discards the file being written.
func (fw *FileWriter) Abort() {
	if fw.tmp == nil {
		return
	}
	fw.tmp.Close()
	os.Remove(fw.tmp.Name())
	fw.tmp = nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// WriteFile writes all tensors of src, in src's order, to the safetensors file
// path, atomically, streaming one tensor at a time. If metadata is nil and src
// has a MetadataAssetName asset holding a JSON string map, that map is used.
func WriteFile(path string, src tensor.Source, metadata map[string]string) error {
	if metadata == nil {
		for _, a := range src.Assets() {
			if a.Name == MetadataAssetName {
				_ = json.Unmarshal(a.Data, &metadata)
			}
		}
	}
	infos := src.Tensors()
	fw, err := Create(path, infos, metadata)
	if err != nil {
		return err
	}
	var buf []byte
	for _, ti := range infos {
		buf, err = src.ReadRaw(ti.Name, buf)
		if err == nil {
			err = fw.WriteTensor(ti.Name, buf)
		}
		if err != nil {
			fw.Abort()
			return err
		}
	}
	return fw.Close()
}
