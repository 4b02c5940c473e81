package container

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// StreamReader reads the sections of a container one after another from an
// io.Reader, with no seeking: each section is checked against its own
// checksum as it arrives, and the index and trailer at the end are checked
// against what was streamed.
type StreamReader struct {
	r       io.Reader
	name    string
	off     int64
	entries []Entry
	done    bool
	err     error
}

// maxStreamIndex bounds the index a stream reader accepts.
const maxStreamIndex = 256 << 20

// NewStreamReader reads and checks the preamble.
func NewStreamReader(r io.Reader, name string) (*StreamReader, error) {
	s := &StreamReader{r: r, name: name}
	p := make([]byte, preambleSize)
	if err := s.full(p, "preamble"); err != nil {
		return nil, err
	}
	if err := checkPreamble(p); err != nil {
		return nil, fmt.Errorf("nwc: %s: %w", name, err)
	}
	return s, nil
}

func (s *StreamReader) full(b []byte, what string) error {
	n, err := io.ReadFull(s.r, b)
	s.off += int64(n)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("nwc: %s: %w: truncated in %s at offset %d", s.name, ErrCorrupt, what, s.off)
		}
		return fmt.Errorf("nwc: %s: read %s: %w", s.name, what, err)
	}
	return nil
}

// readN reads n bytes, growing the buffer as data arrives so that a hostile
// length cannot allocate more than the stream really holds (plus 64 MiB).
func (s *StreamReader) readN(n int64, what string) ([]byte, error) {
	var buf bytes.Buffer
	const chunk = 64 << 20
	for int64(buf.Len()) < n {
		step := min(n-int64(buf.Len()), chunk)
		m, err := io.CopyN(&buf, s.r, step)
		s.off += m
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("nwc: %s: %w: truncated in %s at offset %d", s.name, ErrCorrupt, what, s.off)
			}
			return nil, fmt.Errorf("nwc: %s: read %s: %w", s.name, what, err)
		}
	}
	return buf.Bytes(), nil
}

func (s *StreamReader) skipZero(to int64, what string) error {
	if to <= s.off {
		return nil
	}
	b := make([]byte, to-s.off)
	if err := s.full(b, what); err != nil {
		return err
	}
	for _, c := range b {
		if c != 0 {
			return fmt.Errorf("nwc: %s: %w: %s is not zero", s.name, ErrCorrupt, what)
		}
	}
	return nil
}

func (s *StreamReader) fail(err error) error {
	s.err = err
	return err
}

// Next returns the next section's descriptor and verified payload. After the
// last section it checks the index and trailer and returns io.EOF.
func (s *StreamReader) Next() (Descriptor, []byte, error) {
	if s.err != nil {
		return Descriptor{}, nil, s.err
	}
	if s.done {
		return Descriptor{}, nil, io.EOF
	}
	start := s.off
	var hdr [8]byte
	if err := s.full(hdr[:4], "section magic"); err != nil {
		return Descriptor{}, nil, s.fail(err)
	}
	if bytes.Equal(hdr[:4], indexMagic[:]) {
		return Descriptor{}, nil, s.fail(s.finish(start))
	}
	if !bytes.Equal(hdr[:4], sectionMagic[:]) {
		return Descriptor{}, nil, s.fail(fmt.Errorf("nwc: %s: %w: no section magic at offset %d", s.name, ErrCorrupt, start))
	}
	if err := s.full(hdr[4:], "section header"); err != nil {
		return Descriptor{}, nil, s.fail(err)
	}
	dl := int64(binary.LittleEndian.Uint32(hdr[4:]))
	if dl < 1 || dl > maxDescriptorLen {
		return Descriptor{}, nil, s.fail(fmt.Errorf("nwc: %s: %w: descriptor length %d at offset %d", s.name, ErrCorrupt, dl, start))
	}
	db := make([]byte, dl)
	if err := s.full(db, "descriptor"); err != nil {
		return Descriptor{}, nil, s.fail(err)
	}
	d, err := unmarshalDescriptor(db)
	if err != nil {
		return Descriptor{}, nil, s.fail(fmt.Errorf("nwc: %s: %w: section at %d: %v", s.name, ErrCorrupt, start, err))
	}
	payOff, end := sectionLayout(start, dl, d.PayloadSize)
	h := crc32.New(castagnoli)
	h.Write(hdr[:])
	h.Write(db)
	padLen := payOff - s.off
	if err := s.skipZero(payOff, fmt.Sprintf("padding of %s %q", d.Kind, d.Name)); err != nil {
		return d, nil, s.fail(err)
	}
	h.Write(zeros[:padLen])
	payload, err := s.readN(d.PayloadSize, fmt.Sprintf("%s %q", d.Kind, d.Name))
	if err != nil {
		return d, nil, s.fail(err)
	}
	h.Write(payload)
	var c [4]byte
	if err := s.full(c[:], "section crc"); err != nil {
		return d, nil, s.fail(err)
	}
	sum := binary.LittleEndian.Uint32(c[:])
	if sum != h.Sum32() {
		return d, nil, s.fail(fmt.Errorf("nwc: %s: %w: %s %q", s.name, ErrChecksum, d.Kind, d.Name))
	}
	if err := s.skipZero(end, fmt.Sprintf("padding after %s %q", d.Kind, d.Name)); err != nil {
		return d, nil, s.fail(err)
	}
	s.entries = append(s.entries, Entry{Descriptor: d, SectionOffset: start, PayloadOffset: payOff, CRC: sum, descBytes: db})
	return d, payload, nil
}

// finish reads the index (whose magic was just read) and the trailer, and
// checks them against the streamed sections.
func (s *StreamReader) finish(idxOff int64) error {
	rest, err := io.ReadAll(io.LimitReader(s.r, maxStreamIndex+Align+trailerSize+1))
	if err != nil {
		return fmt.Errorf("nwc: %s: read index: %w", s.name, err)
	}
	if len(rest) > maxStreamIndex+Align+trailerSize || len(rest) < trailerSize {
		return fmt.Errorf("nwc: %s: %w: index and trailer of %d bytes", s.name, ErrCorrupt, len(rest))
	}
	all := append(append([]byte(nil), indexMagic[:]...), rest...)
	size := idxOff + int64(len(all))
	r := &Reader{ra: bytes.NewReader(all), size: int64(len(all)), name: s.name}
	// Re-use the random-access checks on the tail, shifted to file offsets.
	t := all[len(all)-trailerSize:]
	if !bytes.Equal(t[24:], trailerMagic[:]) || crc(t[:20]) != binary.LittleEndian.Uint32(t[20:]) {
		return fmt.Errorf("nwc: %s: %w: bad trailer", s.name, ErrCorrupt)
	}
	if int64(binary.LittleEndian.Uint64(t[0:])) != idxOff {
		return fmt.Errorf("nwc: %s: %w: trailer points to index at %d, found it at %d", s.name, ErrCorrupt, binary.LittleEndian.Uint64(t[0:]), idxOff)
	}
	idxLen := int64(binary.LittleEndian.Uint64(t[8:]))
	if idxLen < 5 || idxLen > int64(len(all))-trailerSize || alignUp(idxOff+idxLen) != size-trailerSize {
		return fmt.Errorf("nwc: %s: %w: index length %d", s.name, ErrCorrupt, idxLen)
	}
	idx := all[:idxLen]
	if crc(idx) != binary.LittleEndian.Uint32(t[16:]) {
		return fmt.Errorf("nwc: %s: %w: index", s.name, ErrChecksum)
	}
	if err := r.checkZero(idxLen, int64(len(all))-trailerSize, "padding after the index"); err != nil {
		return err
	}
	entries, err := parseIndex(idx, idxOff)
	if err != nil {
		return fmt.Errorf("nwc: %s: %w: index: %v", s.name, ErrCorrupt, err)
	}
	if len(entries) != len(s.entries) {
		return fmt.Errorf("nwc: %s: %w: index lists %d sections, stream had %d", s.name, ErrCorrupt, len(entries), len(s.entries))
	}
	for i, e := range entries {
		g := s.entries[i]
		if e.SectionOffset != g.SectionOffset || e.CRC != g.CRC || !bytes.Equal(e.descBytes, g.descBytes) {
			return fmt.Errorf("nwc: %s: %w: index entry %d (%q) does not match the section streamed", s.name, ErrCorrupt, i, e.Name)
		}
	}
	s.done = true
	return io.EOF
}
