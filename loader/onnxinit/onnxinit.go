// Package onnxinit reads the initializers (the weights) of an ONNX model as a
// tensor.Source.
//
// It does not depend on generated onnx.proto code: a small, strict decoder
// built on protowire walks ModelProto.graph (7) -> GraphProto.initializer (5)
// -> TensorProto and records, for each initializer, its name, data type, dims
// and where its data lies: raw_data, the typed repeated fields (float_data,
// int32_data, int64_data, double_data) or an external file (data_location =
// EXTERNAL). The model file is read through ReadAt in 32 KiB windows while
// opening, skipping over the data of the tensors, so opening a model reads
// little more than its graph structure; each Read call then reads one tensor.
// Subgraphs (If/Loop bodies), sparse initializers and Constant nodes are not
// read.
package onnxinit

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/nwc-project/nwc/loader/tensor"
)

// ErrCorrupt: the file is not a valid ONNX model, or an initializer is
// inconsistent.
var ErrCorrupt = tensor.Kind("corrupt ONNX model", tensor.ErrCorrupt)

// MetadataAssetName is the asset holding the model-level fields (ir_version,
// producer, opset imports, metadata_props) as JSON.
const MetadataAssetName = "onnx-metadata.json"

// ONNX TensorProto.DataType values.
const (
	TypeFloat    = 1
	TypeUint8    = 2
	TypeInt8     = 3
	TypeUint16   = 4
	TypeInt16    = 5
	TypeInt32    = 6
	TypeInt64    = 7
	TypeString   = 8
	TypeBool     = 9
	TypeFloat16  = 10
	TypeDouble   = 11
	TypeUint32   = 12
	TypeUint64   = 13
	TypeBFloat16 = 16
)

var dtypes = map[uint64]tensor.DType{
	TypeFloat:    tensor.F32,
	TypeUint8:    tensor.U8,
	TypeInt8:     tensor.I8,
	TypeInt16:    tensor.I16,
	TypeInt32:    tensor.I32,
	TypeInt64:    tensor.I64,
	TypeBool:     tensor.Bool,
	TypeFloat16:  tensor.F16,
	TypeDouble:   tensor.F64,
	TypeBFloat16: tensor.BF16,
}

// TensorProto field numbers.
const (
	fDims         = 1
	fDataType     = 2
	fSegment      = 3
	fFloatData    = 4
	fInt32Data    = 5
	fStringData   = 6
	fInt64Data    = 7
	fName         = 8
	fRawData      = 9
	fDoubleData   = 10
	fUint64Data   = 11
	fExternalData = 13
	fDataLocation = 14
)

// typedField returns the repeated field that holds elements of dt when
// raw_data is not used.
func typedField(dt tensor.DType) protowire.Number {
	switch dt {
	case tensor.F32:
		return fFloatData
	case tensor.F64:
		return fDoubleData
	case tensor.I64:
		return fInt64Data
	default:
		return fInt32Data
	}
}

// Limits on the small fields read while opening.
const (
	maxNameLen     = 1 << 20
	maxDimsLen     = 16 * binaryMaxVarint
	maxEntryLen    = 64 << 10
	maxStringField = 1 << 20
)

type entry struct {
	raw    *span       // raw_data
	msg    span        // the whole TensorProto, for typed data
	typed  bool        // data in the typed repeated field
	ext    io.ReaderAt // external data file
	extOff int64
}

// File is an open ONNX model. It implements tensor.Source.
type File struct {
	name     string
	r        io.ReaderAt
	closer   io.Closer
	infos    []tensor.Info
	index    map[string]int
	entries  []entry
	extFiles map[string]*os.File
	assets   []tensor.Asset
	mu       sync.Mutex
}

var _ tensor.Source = (*File)(nil)

// Open opens an ONNX model file and scans its initializers. External data
// files are looked up relative to the directory of path and must lie inside
// it.
func Open(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("onnxinit: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("onnxinit: %w", err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("onnxinit: %s: not a regular file", path)
	}
	m, err := NewReader(filepath.Base(path), f, st.Size(), filepath.Dir(path))
	if err != nil {
		f.Close()
		return nil, err
	}
	m.closer = f
	return m, nil
}

// NewReader scans a model of the given size read from r; name is used in
// errors. External data is resolved in dir; with dir == "" a model that uses
// external data is an error. The caller keeps r open while the File is used.
func NewReader(name string, r io.ReaderAt, size int64, dir string) (*File, error) {
	m := &File{name: name, r: r, index: make(map[string]int), extFiles: make(map[string]*os.File)}
	if err := m.scan(size, dir); err != nil {
		m.Close()
		return nil, fmt.Errorf("onnxinit: %s: %w", name, err)
	}
	return m, nil
}

type modelMeta struct {
	IRVersion       int64             `json:"ir_version,omitempty"`
	ProducerName    string            `json:"producer_name,omitempty"`
	ProducerVersion string            `json:"producer_version,omitempty"`
	Domain          string            `json:"domain,omitempty"`
	ModelVersion    int64             `json:"model_version,omitempty"`
	GraphName       string            `json:"graph_name,omitempty"`
	OpsetImport     map[string]int64  `json:"opset_import,omitempty"`
	MetadataProps   map[string]string `json:"metadata_props,omitempty"`
}

func (m *File) scan(size int64, dir string) error {
	s := &scanner{r: m.r, size: size}
	var meta modelMeta
	str := func(f field, what string) (string, error) {
		if err := wantType(f, protowire.BytesType, what); err != nil {
			return "", err
		}
		b, err := s.readSpan(f.sp, maxStringField, what)
		return string(b), err
	}
	var graphs []span
	err := s.fields(span{0, size}, func(f field) error {
		var err error
		switch f.num {
		case 1:
			err = wantType(f, protowire.VarintType, "ir_version")
			meta.IRVersion = int64(f.v)
		case 2:
			meta.ProducerName, err = str(f, "producer_name")
		case 3:
			meta.ProducerVersion, err = str(f, "producer_version")
		case 4:
			meta.Domain, err = str(f, "domain")
		case 5:
			err = wantType(f, protowire.VarintType, "model_version")
			meta.ModelVersion = int64(f.v)
		case 7:
			err = wantType(f, protowire.BytesType, "graph")
			graphs = append(graphs, f.sp)
		case 8:
			var b []byte
			if err = wantType(f, protowire.BytesType, "opset_import"); err != nil {
				return err
			}
			if b, err = s.readSpan(f.sp, maxEntryLen, "opset_import"); err != nil {
				return err
			}
			domain, version, err := parseOpset(b)
			if err != nil {
				return err
			}
			if meta.OpsetImport == nil {
				meta.OpsetImport = make(map[string]int64)
			}
			meta.OpsetImport[domain] = version
		case 14:
			var b []byte
			if err = wantType(f, protowire.BytesType, "metadata_props"); err != nil {
				return err
			}
			if b, err = s.readSpan(f.sp, maxStringField, "metadata_props"); err != nil {
				return err
			}
			k, v, err := parseStringEntry(b)
			if err != nil {
				return err
			}
			if meta.MetadataProps == nil {
				meta.MetadataProps = make(map[string]string)
			}
			meta.MetadataProps[k] = v
		}
		return err
	})
	if err != nil {
		return err
	}
	if len(graphs) == 0 {
		return fmt.Errorf("%w: no graph (not an ONNX model?)", ErrCorrupt)
	}
	for _, g := range graphs {
		err := s.fields(g, func(f field) error {
			switch f.num {
			case 2: // name
				name, err := str(f, "graph name")
				meta.GraphName = name
				return err
			case 5:
				if err := wantType(f, protowire.BytesType, "initializer"); err != nil {
					return err
				}
				return m.addTensor(s, f.sp, dir)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	b, err := json.Marshal(meta)
	if err != nil {
		return err
	}
	m.assets = []tensor.Asset{{Name: MetadataAssetName, Data: b}}
	return nil
}

func parseOpset(b []byte) (domain string, version int64, err error) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return "", 0, fmt.Errorf("%w: bad opset_import: %v", ErrCorrupt, protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return "", 0, fmt.Errorf("%w: bad opset_import: %v", ErrCorrupt, protowire.ParseError(n))
			}
			domain, b = string(v), b[n:]
		case num == 2 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return "", 0, fmt.Errorf("%w: bad opset_import: %v", ErrCorrupt, protowire.ParseError(n))
			}
			version, b = int64(v), b[n:]
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return "", 0, fmt.Errorf("%w: bad opset_import: %v", ErrCorrupt, protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	return domain, version, nil
}

// count of the elements of a repeated field: exact for fixed-size and
// unpacked elements, an upper bound (bytes) for packed varints.
type count struct {
	present      bool
	exact        int64
	packedVarint int64
}

func (c count) empty() bool { return c.exact == 0 && c.packedVarint == 0 }

// addTensor scans one TensorProto.
func (m *File) addTensor(s *scanner, msg span, dir string) error {
	var (
		name      string
		haveName  bool
		dtype     uint64
		dims      []int64
		raw       *span
		counts    = map[protowire.Number]*count{}
		ext       = map[string]string{}
		location  uint64
		idx       = len(m.infos)
		errTensor = func(err error) error { return err }
	)
	cnt := func(n protowire.Number) *count {
		if counts[n] == nil {
			counts[n] = &count{}
		}
		return counts[n]
	}
	err := s.fields(msg, func(f field) error {
		switch f.num {
		case fDims:
			switch f.typ {
			case protowire.VarintType:
				dims = append(dims, int64(f.v))
			case protowire.BytesType:
				b, err := s.readSpan(f.sp, maxDimsLen, "dims")
				if err != nil {
					return err
				}
				for len(b) > 0 {
					v, n := protowire.ConsumeVarint(b)
					if n < 0 {
						return fmt.Errorf("%w: bad packed dims: %v", ErrCorrupt, protowire.ParseError(n))
					}
					dims = append(dims, int64(v))
					b = b[n:]
				}
			default:
				return wantType(f, protowire.VarintType, "dims")
			}
			if len(dims) > tensor.MaxRank {
				return fmt.Errorf("%w: rank exceeds %d", tensor.ErrShape, tensor.MaxRank)
			}
		case fDataType:
			if err := wantType(f, protowire.VarintType, "data_type"); err != nil {
				return err
			}
			dtype = f.v
		case fSegment:
			return fmt.Errorf("%w: segmented tensors are not supported", ErrCorrupt)
		case fFloatData, fDoubleData:
			size, fixed := int64(4), protowire.Fixed32Type
			if f.num == fDoubleData {
				size, fixed = 8, protowire.Fixed64Type
			}
			c := cnt(f.num)
			c.present = true
			switch f.typ {
			case fixed:
				c.exact++
			case protowire.BytesType:
				if f.sp.n%size != 0 {
					return fmt.Errorf("%w: packed field %d of %d bytes is not a multiple of %d", ErrCorrupt, f.num, f.sp.n, size)
				}
				c.exact += f.sp.n / size
			default:
				return wantType(f, fixed, "float_data/double_data")
			}
		case fInt32Data, fInt64Data, fUint64Data:
			c := cnt(f.num)
			c.present = true
			switch f.typ {
			case protowire.VarintType:
				c.exact++
			case protowire.BytesType:
				c.packedVarint += f.sp.n
			default:
				return wantType(f, protowire.VarintType, "int32_data/int64_data")
			}
		case fStringData:
			if err := wantType(f, protowire.BytesType, "string_data"); err != nil {
				return err
			}
			c := cnt(f.num)
			c.present = true
			c.exact++
		case fName:
			if err := wantType(f, protowire.BytesType, "name"); err != nil {
				return err
			}
			b, err := s.readSpan(f.sp, maxNameLen, "name")
			if err != nil {
				return err
			}
			if !utf8.Valid(b) {
				return fmt.Errorf("%w: name is not valid UTF-8", ErrCorrupt)
			}
			name, haveName = string(b), true
			errTensor = func(err error) error { return fmt.Errorf("tensor %q: %w", name, err) }
		case fRawData:
			if err := wantType(f, protowire.BytesType, "raw_data"); err != nil {
				return err
			}
			sp := f.sp
			raw = &sp
		case fExternalData:
			if err := wantType(f, protowire.BytesType, "external_data"); err != nil {
				return err
			}
			b, err := s.readSpan(f.sp, maxEntryLen, "external_data entry")
			if err != nil {
				return err
			}
			k, v, err := parseStringEntry(b)
			if err != nil {
				return err
			}
			ext[k] = v
		case fDataLocation:
			if err := wantType(f, protowire.VarintType, "data_location"); err != nil {
				return err
			}
			location = f.v
		}
		return nil
	})
	if err != nil {
		if haveName {
			return errTensor(err)
		}
		return fmt.Errorf("initializer %d: %w", idx, err)
	}
	terr := func(format string, args ...any) error {
		return fmt.Errorf("tensor %q: "+format, append([]any{name}, args...)...)
	}
	if !haveName || name == "" {
		return fmt.Errorf("initializer %d: %w: no name", idx, ErrCorrupt)
	}
	if _, dup := m.index[name]; dup {
		return terr("%w: duplicate initializer name", ErrCorrupt)
	}
	dt, ok := dtypes[dtype]
	if !ok {
		return terr("%w: ONNX data_type %d", tensor.ErrUnsupportedDType, dtype)
	}
	if dims == nil {
		dims = []int64{}
	}
	for _, d := range dims {
		if d < 0 {
			return terr("%w: negative dimension in %v", tensor.ErrShape, dims)
		}
	}
	n := tensor.NumElements(dims)
	if n < 0 {
		return terr("%w: dims %v", tensor.ErrShape, dims)
	}
	nbytes, err := dt.StorageBytes(n)
	if err != nil {
		return terr("%w", err)
	}
	e := entry{msg: msg}
	tf := typedField(dt)
	for num, c := range counts {
		if num != tf && !c.empty() {
			return terr("%w: %s data stored in the wrong field (%d)", ErrCorrupt, dt, num)
		}
	}
	typed := counts[tf]
	if typed == nil {
		typed = &count{}
	}
	hasTyped := !typed.empty()
	switch location {
	case 0: // DEFAULT
		if len(ext) > 0 {
			return terr("%w: external_data without data_location EXTERNAL", ErrCorrupt)
		}
	case 1: // EXTERNAL
		if raw != nil || hasTyped {
			return terr("%w: external tensor also has inline data", ErrCorrupt)
		}
		if err := m.resolveExternal(&e, ext, nbytes, dir); err != nil {
			return terr("%w", err)
		}
	default:
		return terr("%w: unknown data_location %d", ErrCorrupt, location)
	}
	switch {
	case location == 1:
	case raw != nil && (raw.n > 0 || !hasTyped):
		if hasTyped {
			return terr("%w: both raw_data and typed data", ErrCorrupt)
		}
		if raw.n != nbytes {
			return terr("%w: raw_data of %d bytes, %v %s needs %d", tensor.ErrShape, raw.n, dims, dt, nbytes)
		}
		e.raw = raw
	case hasTyped:
		if typed.packedVarint == 0 && typed.exact != n || n < typed.exact || n > typed.exact+typed.packedVarint {
			return terr("%w: %v %s needs %d elements, the typed data holds %d..%d", tensor.ErrShape, dims, dt, n, typed.exact, typed.exact+typed.packedVarint)
		}
		e.typed = true
	case n > 0:
		return terr("%w: no data for %d elements", ErrCorrupt, n)
	}
	m.index[name] = len(m.infos)
	m.infos = append(m.infos, tensor.Info{Name: name, DType: dt, Shape: dims, Size: nbytes})
	m.entries = append(m.entries, e)
	return nil
}

// resolveExternal validates the external_data keys and opens the file.
func (m *File) resolveExternal(e *entry, ext map[string]string, nbytes int64, dir string) error {
	loc := ext["location"]
	if loc == "" {
		return fmt.Errorf("%w: external data without location", ErrCorrupt)
	}
	if dir == "" {
		return fmt.Errorf("%w: external data %q but no model directory", ErrCorrupt, loc)
	}
	parseInt := func(key string) (int64, bool, error) {
		v, ok := ext[key]
		if !ok {
			return 0, false, nil
		}
		i, err := strconv.ParseInt(v, 10, 64)
		if err != nil || i < 0 {
			return 0, false, fmt.Errorf("%w: external data %s %q is not a valid number", ErrCorrupt, key, v)
		}
		return i, true, nil
	}
	off, _, err := parseInt("offset")
	if err != nil {
		return err
	}
	length, haveLen, err := parseInt("length")
	if err != nil {
		return err
	}
	if haveLen && length != nbytes {
		return fmt.Errorf("%w: external data length %d, the tensor needs %d bytes", tensor.ErrShape, length, nbytes)
	}
	f, ok := m.extFiles[loc]
	if !ok {
		rel := filepath.FromSlash(loc)
		if !filepath.IsLocal(rel) {
			return fmt.Errorf("%w: external data location %q is not inside the model directory", ErrCorrupt, loc)
		}
		full := filepath.Join(dir, rel)
		realDir, err := filepath.EvalSymlinks(dir)
		if err != nil {
			return err
		}
		real, err := filepath.EvalSymlinks(full)
		if err != nil {
			return fmt.Errorf("external data: %w", err)
		}
		if r, err := filepath.Rel(realDir, real); err != nil || !filepath.IsLocal(r) {
			return fmt.Errorf("%w: external data location %q resolves outside the model directory", ErrCorrupt, loc)
		}
		f, err = os.Open(real)
		if err != nil {
			return fmt.Errorf("external data: %w", err)
		}
		m.extFiles[loc] = f
	}
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("external data: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%w: external data %q is not a regular file", ErrCorrupt, loc)
	}
	if off > st.Size() || nbytes > st.Size()-off {
		return fmt.Errorf("%w: external data %q [%d, +%d) exceeds its %d bytes", ErrCorrupt, loc, off, nbytes, st.Size())
	}
	e.ext, e.extOff = f, off
	return nil
}

// Name returns the base name of the model file.
func (m *File) Name() string { return m.name }

// Tensors lists the initializers in graph order.
func (m *File) Tensors() []tensor.Info { return m.infos }

// Assets returns the model-level metadata as MetadataAssetName.
func (m *File) Assets() []tensor.Asset { return m.assets }

// ReadRaw returns the bytes of the named initializer, little endian, reusing
// dst when it is large enough.
func (m *File) ReadRaw(name string, dst []byte) ([]byte, error) {
	i, ok := m.index[name]
	if !ok {
		return nil, fmt.Errorf("onnxinit: %s: tensor %q: %w", m.name, name, tensor.ErrNotFound)
	}
	ti, e := m.infos[i], m.entries[i]
	if int64(cap(dst)) < ti.Size {
		dst = make([]byte, ti.Size)
	}
	dst = dst[:ti.Size]
	var err error
	switch {
	case ti.Size == 0:
	case e.raw != nil:
		err = readFull(m.r, dst, e.raw.off)
	case e.ext != nil:
		err = readFull(e.ext, dst, e.extOff)
	case e.typed:
		err = m.readTyped(ti, e, dst)
	}
	if err != nil {
		return nil, fmt.Errorf("onnxinit: %s: tensor %q: %w", m.name, name, err)
	}
	return dst, nil
}

func readFull(r io.ReaderAt, dst []byte, off int64) error {
	n, err := r.ReadAt(dst, off)
	if err != nil && n == len(dst) {
		return nil
	}
	return err
}

// readTyped decodes the typed repeated field of the TensorProto into dst.
func (m *File) readTyped(ti tensor.Info, e entry, dst []byte) error {
	msg := make([]byte, e.msg.n)
	if err := readFull(m.r, msg, e.msg.off); err != nil {
		return err
	}
	want := typedField(ti.DType)
	esize := int(ti.Size / max(ti.NumElements(), 1))
	k := 0 // elements written
	put := func(v uint64) error {
		if (k+1)*esize > len(dst) {
			return fmt.Errorf("%w: more typed elements than dims %v hold", tensor.ErrShape, ti.Shape)
		}
		b := dst[k*esize:]
		switch ti.DType {
		case tensor.F32:
			binary.LittleEndian.PutUint32(b, uint32(v))
		case tensor.F64, tensor.I64:
			binary.LittleEndian.PutUint64(b, v)
		default: // int32_data: sign-extended 64-bit varint holding an int32
			x := int64(v)
			lo, hi := int64(math.MinInt32), int64(math.MaxInt32)
			switch ti.DType {
			case tensor.I8:
				lo, hi = math.MinInt8, math.MaxInt8
			case tensor.I16:
				lo, hi = math.MinInt16, math.MaxInt16
			case tensor.U8:
				lo, hi = 0, math.MaxUint8
			case tensor.Bool:
				lo, hi = 0, 1
			case tensor.F16, tensor.BF16:
				lo, hi = 0, math.MaxUint16
			}
			if x < lo || x > hi {
				return fmt.Errorf("%w: int32_data value %d out of range for %s", ErrCorrupt, x, ti.DType)
			}
			switch esize {
			case 1:
				b[0] = byte(x)
			case 2:
				binary.LittleEndian.PutUint16(b, uint16(x))
			case 4:
				binary.LittleEndian.PutUint32(b, uint32(x))
			}
		}
		k++
		return nil
	}
	b := msg
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("%w: %v", ErrCorrupt, protowire.ParseError(n))
		}
		b = b[n:]
		if num != want {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return fmt.Errorf("%w: %v", ErrCorrupt, protowire.ParseError(n))
			}
			b = b[n:]
			continue
		}
		var err error
		switch typ {
		case protowire.BytesType: // packed
			var p []byte
			p, n = protowire.ConsumeBytes(b)
			for n >= 0 && len(p) > 0 && err == nil {
				var v uint64
				var m int
				switch want {
				case fFloatData:
					var v32 uint32
					v32, m = protowire.ConsumeFixed32(p)
					v = uint64(v32)
				case fDoubleData:
					v, m = protowire.ConsumeFixed64(p)
				default:
					v, m = protowire.ConsumeVarint(p)
				}
				if m < 0 {
					return fmt.Errorf("%w: %v", ErrCorrupt, protowire.ParseError(m))
				}
				p = p[m:]
				err = put(v)
			}
		case protowire.Fixed32Type:
			var v uint32
			v, n = protowire.ConsumeFixed32(b)
			if n >= 0 {
				err = put(uint64(v))
			}
		case protowire.Fixed64Type:
			var v uint64
			v, n = protowire.ConsumeFixed64(b)
			if n >= 0 {
				err = put(v)
			}
		case protowire.VarintType:
			var v uint64
			v, n = protowire.ConsumeVarint(b)
			if n >= 0 {
				err = put(v)
			}
		default:
			return fmt.Errorf("%w: wire type %d of field %d", ErrCorrupt, typ, num)
		}
		if n < 0 {
			return fmt.Errorf("%w: %v", ErrCorrupt, protowire.ParseError(n))
		}
		if err != nil {
			return err
		}
		b = b[n:]
	}
	if int64(k) != ti.NumElements() {
		return fmt.Errorf("%w: %d typed elements, dims %v need %d", tensor.ErrShape, k, ti.Shape, ti.NumElements())
	}
	return nil
}

// ReadFloat32 returns the named initializer converted to float32 (FLOAT,
// FLOAT16, BFLOAT16 and DOUBLE only).
func (m *File) ReadFloat32(name string, dst []float32) ([]float32, error) {
	return tensor.ReadFloat32(m, "onnxinit: "+m.name, name, dst)
}

// Close closes the model file (if Open opened it) and the external data files.
func (m *File) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	for k, f := range m.extFiles {
		if err := f.Close(); err != nil {
			errs = append(errs, err)
		}
		delete(m.extFiles, k)
	}
	if m.closer != nil {
		if err := m.closer.Close(); err != nil {
			errs = append(errs, err)
		}
		m.closer = nil
	}
	return errors.Join(errs...)
}
