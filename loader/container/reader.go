package container

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"

	"github.com/nwc-project/nwc/loader/stage"
)

// Reader gives random access to the sections of a .nwc container. It holds
// only the index in memory. Its methods are safe for concurrent use.
type Reader struct {
	ra      io.ReaderAt
	size    int64
	name    string
	entries []Entry
	byName  map[Kind]map[string]int
	file    *os.File
}

// Open opens the container at path and loads its index.
func Open(path string) (*Reader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("nwc: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("nwc: %w", err)
	}
	r, err := NewReader(f, st.Size(), path)
	if err != nil {
		f.Close()
		return nil, err
	}
	r.file = f
	return r, nil
}

// NewReader reads the preamble, trailer and index of a container of size
// bytes. name is used in error messages.
func NewReader(ra io.ReaderAt, size int64, name string) (*Reader, error) {
	r := &Reader{ra: ra, size: size, name: name, byName: map[Kind]map[string]int{}}
	if err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *Reader) errorf(sentinel error, format string, a ...any) error {
	return fmt.Errorf("nwc: %s: %w: %s", r.name, sentinel, fmt.Sprintf(format, a...))
}

func (r *Reader) readAt(off, n int64, what string) ([]byte, error) {
	if off < 0 || n < 0 || off > r.size || n > r.size-off {
		return nil, r.errorf(ErrCorrupt, "%s [%d, %d) lies outside the file (%d bytes)", what, off, off+n, r.size)
	}
	b := make([]byte, n)
	if _, err := r.ra.ReadAt(b, off); err != nil && !(err == io.EOF && n == 0) {
		return nil, fmt.Errorf("nwc: %s: read %s: %w", r.name, what, err)
	}
	return b, nil
}

func checkPreamble(p []byte) error {
	if !HasMagic(p) {
		return ErrBadMagic
	}
	if crc(p[:60]) != binary.LittleEndian.Uint32(p[60:]) {
		return fmt.Errorf("%w: preamble", ErrChecksum)
	}
	if v := binary.LittleEndian.Uint16(p[8:]); v != VersionMajor {
		return fmt.Errorf("%w: major version %d (this build reads %d)", ErrVersion, v, VersionMajor)
	}
	if f := binary.LittleEndian.Uint32(p[12:]); f != 0 {
		return fmt.Errorf("%w: unknown flags %#x", ErrVersion, f)
	}
	return nil
}

func (r *Reader) load() error {
	if r.size < preambleSize+trailerSize {
		if r.size >= 8 {
			if p, err := r.readAt(0, 8, "magic"); err == nil && !HasMagic(p) {
				return r.errorf(ErrBadMagic, "file starts with %q", p)
			}
		}
		return r.errorf(ErrCorrupt, "file is %d bytes, too short for a container", r.size)
	}
	p, err := r.readAt(0, preambleSize, "preamble")
	if err != nil {
		return err
	}
	if err := checkPreamble(p); err != nil {
		return fmt.Errorf("nwc: %s: %w", r.name, err)
	}
	t, err := r.readAt(r.size-trailerSize, trailerSize, "trailer")
	if err != nil {
		return err
	}
	if !bytes.Equal(t[24:], trailerMagic[:]) {
		return r.errorf(ErrCorrupt, "trailer magic missing (truncated file?)")
	}
	if crc(t[:20]) != binary.LittleEndian.Uint32(t[20:]) {
		return r.errorf(ErrChecksum, "trailer")
	}
	idxOff := int64(binary.LittleEndian.Uint64(t[0:]))
	idxLen := int64(binary.LittleEndian.Uint64(t[8:]))
	trailerOff := r.size - trailerSize
	if idxOff < preambleSize || idxOff%Align != 0 || idxLen < 5 || idxLen > trailerOff-idxOff ||
		alignUp(idxOff+idxLen) != trailerOff {
		return r.errorf(ErrCorrupt, "index [%d, +%d) does not fit before the trailer at %d", idxOff, idxLen, trailerOff)
	}
	idx, err := r.readAt(idxOff, idxLen, "index")
	if err != nil {
		return err
	}
	if crc(idx) != binary.LittleEndian.Uint32(t[16:]) {
		return r.errorf(ErrChecksum, "index")
	}
	entries, err := parseIndex(idx, idxOff)
	if err != nil {
		return r.errorf(ErrCorrupt, "index: %v", err)
	}
	r.entries = entries
	for i, e := range entries {
		if r.byName[e.Kind] == nil {
			r.byName[e.Kind] = map[string]int{}
		}
		if _, dup := r.byName[e.Kind][e.Name]; dup {
			return r.errorf(ErrCorrupt, "index: duplicate %s %q", e.Kind, e.Name)
		}
		r.byName[e.Kind][e.Name] = i
	}
	return nil
}

// parseIndex decodes the index and checks that the sections tile the file
// from the preamble to the index exactly.
func parseIndex(idx []byte, idxOff int64) ([]Entry, error) {
	d := decoder{b: idx}
	if !bytes.Equal(d.bytes(4, "magic"), indexMagic[:]) {
		return nil, fmt.Errorf("bad magic")
	}
	n := d.uvarint(maxSections, "section count")
	if d.err != nil {
		return nil, d.err
	}
	// every entry takes at least 21 bytes: bound the allocation by the data.
	if n > uint64(len(d.b))/21 {
		return nil, fmt.Errorf("section count %d does not fit in %d index bytes", n, len(idx))
	}
	entries := make([]Entry, 0, n)
	next := int64(preambleSize)
	for i := uint64(0); i < n; i++ {
		db := d.bytes(d.uvarint(maxDescriptorLen, "descriptor length"), "descriptor")
		secOff := int64(d.u64())
		payOff := int64(d.u64())
		sum := d.u32()
		if d.err != nil {
			return nil, fmt.Errorf("entry %d: %v", i, d.err)
		}
		desc, err := unmarshalDescriptor(db)
		if err != nil {
			return nil, fmt.Errorf("entry %d: %v", i, err)
		}
		if secOff != next {
			return nil, fmt.Errorf("%s %q: section at %d, expected %d", desc.Kind, desc.Name, secOff, next)
		}
		if desc.PayloadSize > idxOff {
			return nil, fmt.Errorf("%s %q: payload of %d bytes exceeds the file", desc.Kind, desc.Name, desc.PayloadSize)
		}
		wantPay, end := sectionLayout(secOff, int64(len(db)), desc.PayloadSize)
		if payOff != wantPay || end > idxOff {
			return nil, fmt.Errorf("%s %q: section layout [%d, %d) payload %d inconsistent (index at %d)", desc.Kind, desc.Name, secOff, end, payOff, idxOff)
		}
		next = end
		entries = append(entries, Entry{Descriptor: desc, SectionOffset: secOff, PayloadOffset: payOff, CRC: sum, descBytes: append([]byte(nil), db...)})
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("%d trailing bytes", len(d.b))
	}
	if next != idxOff {
		return nil, fmt.Errorf("sections end at %d but the index starts at %d", next, idxOff)
	}
	return entries, nil
}

// Name returns the name used in error messages (the path for Open).
func (r *Reader) Name() string { return r.name }

// Size returns the container's size in bytes.
func (r *Reader) Size() int64 { return r.size }

// Entries returns the index entries in file order. The slice must not be modified.
func (r *Reader) Entries() []Entry { return r.entries }

// Lookup finds a section by kind and name.
func (r *Reader) Lookup(kind Kind, name string) (Entry, error) {
	i, ok := r.byName[kind][name]
	if !ok {
		return Entry{}, fmt.Errorf("nwc: %s: %w: %s %q", r.name, ErrNotFound, kind, name)
	}
	return r.entries[i], nil
}

// ReadPayload reads the section of e, verifies its checksum and returns the
// payload.
func (r *Reader) ReadPayload(e Entry) ([]byte, error) { return r.ReadPayloadTimed(e, nil) }

// ReadPayloadTimed is ReadPayload that adds the time spent reading and
// checksumming to st (stage.Read, stage.Checksum; nil: not timed).
func (r *Reader) ReadPayloadTimed(e Entry, st *stage.Times) ([]byte, error) {
	t0 := st.Start()
	end := e.PayloadOffset + e.PayloadSize + 4
	sec, err := r.readAt(e.SectionOffset, end-e.SectionOffset, fmt.Sprintf("%s %q", e.Kind, e.Name))
	if err != nil {
		return nil, err
	}
	t0 = st.Since(stage.Read, t0, int64(len(sec)))
	defer st.Since(stage.Checksum, t0, int64(len(sec)))
	descLen := int64(len(e.descBytes))
	if !bytes.Equal(sec[:4], sectionMagic[:]) || int64(binary.LittleEndian.Uint32(sec[4:])) != descLen ||
		!bytes.Equal(sec[8:8+descLen], e.descBytes) {
		return nil, r.errorf(ErrCorrupt, "%s %q: section header does not match the index", e.Kind, e.Name)
	}
	body := sec[:len(sec)-4]
	if got := crc(body); got != e.CRC || binary.LittleEndian.Uint32(sec[len(sec)-4:]) != e.CRC {
		return nil, r.errorf(ErrChecksum, "%s %q: section crc %08x, index says %08x", e.Kind, e.Name, got, e.CRC)
	}
	return body[e.PayloadOffset-e.SectionOffset:], nil
}

// Verify checks every byte of the container: all section checksums, and that
// all padding is zero. It returns the first problem found.
func (r *Reader) Verify() error {
	for _, e := range r.entries {
		if _, err := r.ReadPayload(e); err != nil {
			return err
		}
		end := e.PayloadOffset + e.PayloadSize + 4
		if err := r.checkZero(end, alignUp(end), fmt.Sprintf("padding after %s %q", e.Kind, e.Name)); err != nil {
			return err
		}
	}
	idxEnd := r.size - trailerSize
	t, err := r.readAt(idxEnd, trailerSize, "trailer")
	if err != nil {
		return err
	}
	idxStart := int64(binary.LittleEndian.Uint64(t[0:])) + int64(binary.LittleEndian.Uint64(t[8:]))
	return r.checkZero(idxStart, idxEnd, "padding after the index")
}

func (r *Reader) checkZero(from, to int64, what string) error {
	b, err := r.readAt(from, to-from, what)
	if err != nil {
		return err
	}
	for _, c := range b {
		if c != 0 {
			return r.errorf(ErrCorrupt, "%s is not zero", what)
		}
	}
	return nil
}

// Close closes the underlying file when the Reader was made by Open.
func (r *Reader) Close() error {
	if r.file != nil {
		err := r.file.Close()
		r.file = nil
		return err
	}
	return nil
}
