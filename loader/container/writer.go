package container

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
)

// Writer writes a .nwc container. Sections are written in the order of the
// WriteSection calls; Close writes the index and trailer.
type Writer struct {
	bw      *bufio.Writer
	off     int64
	entries []Entry
	names   map[Kind]map[string]bool
	err     error
	closed  bool

	// set by Create: atomic file replacement
	file   *os.File
	target string
}

// Entry is an index entry: a descriptor and where its section lies.
type Entry struct {
	Descriptor
	SectionOffset int64
	PayloadOffset int64
	CRC           uint32
	descBytes     []byte
}

// SectionSize is the number of file bytes the section occupies, descriptor,
// padding and checksum included.
func (e *Entry) SectionSize() int64 {
	_, end := sectionLayout(e.SectionOffset, int64(len(e.descBytes)), e.PayloadSize)
	return end - e.SectionOffset
}

// NewWriter starts a container on w.
func NewWriter(w io.Writer) (*Writer, error) {
	cw := &Writer{bw: bufio.NewWriterSize(w, 1<<20), names: map[Kind]map[string]bool{}}
	var p [preambleSize]byte
	copy(p[:], preambleMagic[:])
	binary.LittleEndian.PutUint16(p[8:], VersionMajor)
	binary.LittleEndian.PutUint16(p[10:], VersionMinor)
	binary.LittleEndian.PutUint32(p[60:], crc(p[:60]))
	if err := cw.write(p[:]); err != nil {
		return nil, err
	}
	return cw, nil
}

// Create starts a container that replaces path atomically when Close
// succeeds: the bytes go to a temporary file in the same directory, which is
// synced and renamed over path. Abort (or a failed Close) removes it.
func Create(path string) (*Writer, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("nwc: create %s: %w", path, err)
	}
	// CreateTemp makes the file 0600; give the result ordinary permissions.
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("nwc: create %s: %w", path, err)
	}
	w, err := NewWriter(f)
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("nwc: %s: %w", path, err)
	}
	w.file, w.target = f, path
	return w, nil
}

func (w *Writer) write(b []byte) error {
	if w.err != nil {
		return w.err
	}
	n, err := w.bw.Write(b)
	w.off += int64(n)
	if err != nil {
		w.err = fmt.Errorf("nwc: write: %w", err)
	}
	return w.err
}

var zeros [Align]byte

func (w *Writer) pad() error {
	if n := alignUp(w.off) - w.off; n > 0 {
		return w.write(zeros[:n])
	}
	return nil
}

// WriteSection writes one section. d.PayloadSize is set from payload.
func (w *Writer) WriteSection(d Descriptor, payload []byte) error {
	if w.closed {
		return errors.New("nwc: write to closed writer")
	}
	if w.err != nil {
		return w.err
	}
	d.PayloadSize = int64(len(payload))
	if err := d.Validate(); err != nil {
		return fmt.Errorf("nwc: section: %w", err)
	}
	if w.names[d.Kind][d.Name] {
		return fmt.Errorf("nwc: duplicate %s %q", d.Kind, d.Name)
	}
	if len(w.entries) >= maxSections {
		return fmt.Errorf("nwc: more than %d sections", maxSections)
	}
	desc := d.marshal(nil)
	start := w.off
	payloadOff, _ := sectionLayout(start, int64(len(desc)), int64(len(payload)))
	var hdr [8]byte
	copy(hdr[:], sectionMagic[:])
	binary.LittleEndian.PutUint32(hdr[4:], uint32(len(desc)))
	h := crc32.New(castagnoli)
	h.Write(hdr[:])
	h.Write(desc)
	padLen := payloadOff - (start + 8 + int64(len(desc)))
	h.Write(zeros[:padLen])
	h.Write(payload)
	sum := h.Sum32()
	w.write(hdr[:])
	w.write(desc)
	w.write(zeros[:padLen])
	w.write(payload)
	var c [4]byte
	binary.LittleEndian.PutUint32(c[:], sum)
	w.write(c[:])
	if err := w.pad(); err != nil {
		return err
	}
	if w.names[d.Kind] == nil {
		w.names[d.Kind] = map[string]bool{}
	}
	w.names[d.Kind][d.Name] = true
	w.entries = append(w.entries, Entry{Descriptor: d, SectionOffset: start, PayloadOffset: payloadOff, CRC: sum, descBytes: desc})
	return nil
}

// Close writes the index and trailer, flushes, and (for Create) syncs and
// renames the file into place.
func (w *Writer) Close() error {
	if w.closed {
		return w.err
	}
	w.closed = true
	err := w.finish()
	if w.file != nil {
		if err == nil {
			err = w.file.Sync()
		}
		if cerr := w.file.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(w.file.Name(), w.target)
		}
		if err != nil {
			os.Remove(w.file.Name())
			err = fmt.Errorf("nwc: %s: %w", w.target, err)
		}
	}
	if err != nil && w.err == nil {
		w.err = err
	}
	return err
}

// Abort discards a container started with Create.
func (w *Writer) Abort() {
	if w.closed {
		return
	}
	w.closed = true
	if w.err == nil {
		w.err = errors.New("nwc: writer aborted")
	}
	if w.file != nil {
		w.file.Close()
		os.Remove(w.file.Name())
	}
}

func (w *Writer) finish() error {
	if w.err != nil {
		return w.err
	}
	idx := append([]byte(nil), indexMagic[:]...)
	idx = binary.AppendUvarint(idx, uint64(len(w.entries)))
	for _, e := range w.entries {
		idx = binary.AppendUvarint(idx, uint64(len(e.descBytes)))
		idx = append(idx, e.descBytes...)
		idx = binary.LittleEndian.AppendUint64(idx, uint64(e.SectionOffset))
		idx = binary.LittleEndian.AppendUint64(idx, uint64(e.PayloadOffset))
		idx = binary.LittleEndian.AppendUint32(idx, e.CRC)
	}
	idxOff := w.off
	w.write(idx)
	w.pad()
	var t [trailerSize]byte
	binary.LittleEndian.PutUint64(t[0:], uint64(idxOff))
	binary.LittleEndian.PutUint64(t[8:], uint64(len(idx)))
	binary.LittleEndian.PutUint32(t[16:], crc(idx))
	binary.LittleEndian.PutUint32(t[20:], crc(t[:20]))
	copy(t[24:], trailerMagic[:])
	if err := w.write(t[:]); err != nil {
		return err
	}
	if err := w.bw.Flush(); err != nil {
		w.err = fmt.Errorf("nwc: write: %w", err)
	}
	return w.err
}
