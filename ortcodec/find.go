package ortcodec

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/nwc-project/nwc/models"
)

// ErrNoCodec: no trained codec folder of that name was found.
var ErrNoCodec = errors.New("trained codec not found")

// DefaultCodecs returns where trained codecs are looked up when the host
// names no folder: the folders in $NWC_CODECS (separated by ':'), first
// match wins, then the codecs shipped in package models (embedded in the
// program).
func DefaultCodecs() fs.FS {
	var layers []fs.FS
	var names []string
	if env := os.Getenv("NWC_CODECS"); env != "" {
		for _, d := range filepath.SplitList(env) {
			layers = append(layers, os.DirFS(d))
			names = append(names, d)
		}
	}
	return union{fss: append(layers, models.FS), names: append(names, "shipped codecs (package models)")}
}

// union is a read-only fs.FS that opens a name from the first layer that
// has it; "." lists every layer.
type union struct {
	fss   []fs.FS
	names []string
}

func (u union) Open(name string) (fs.File, error) {
	var first error
	for _, f := range u.fss {
		fh, err := f.Open(name)
		if err == nil {
			return fh, nil
		}
		if first == nil {
			first = err
		}
	}
	if first == nil {
		first = &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	return nil, first
}

// ReadDir merges the listings of every layer (first layer wins by name).
func (u union) ReadDir(name string) ([]fs.DirEntry, error) {
	seen := map[string]bool{}
	var out []fs.DirEntry
	found := false
	for _, f := range u.fss {
		ents, err := fs.ReadDir(f, name)
		if err != nil {
			continue
		}
		found = true
		for _, e := range ents {
			if !seen[e.Name()] {
				seen[e.Name()] = true
				out = append(out, e)
			}
		}
	}
	if !found {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: fs.ErrNotExist}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out, nil
}

func (u union) String() string { return strings.Join(u.names, ", ") }

// fsName names an fs.FS for error messages.
func fsName(fsys fs.FS) string {
	if s, ok := fsys.(fmt.Stringer); ok {
		return s.String()
	}
	return fmt.Sprintf("%T", fsys)
}

// IsCodec reports whether fsys holds a codec folder called name.
func IsCodec(fsys fs.FS, name string) bool {
	for _, f := range []string{EncoderFile, DecoderFile, EntropyFile} {
		st, err := fs.Stat(fsys, path.Join(name, f))
		if err != nil || st.IsDir() {
			return false
		}
	}
	return true
}

// Resolve finds the codec called name: in fsys (nil: DefaultCodecs), or, when
// name is a path to a codec folder on disk, that folder. It returns the
// file system and the folder name inside it.
func Resolve(fsys fs.FS, name string) (fs.FS, string, error) {
	if strings.ContainsRune(name, filepath.Separator) {
		dir := filepath.Clean(name)
		if d := os.DirFS(filepath.Dir(dir)); IsCodec(d, filepath.Base(dir)) {
			return d, filepath.Base(dir), nil
		}
	}
	if fsys == nil {
		fsys = DefaultCodecs()
	}
	if name == "" || !fs.ValidPath(name) || strings.Contains(name, "/") || name == "." {
		return nil, "", fmt.Errorf("%w: %q", ErrNoCodec, name)
	}
	if !IsCodec(fsys, name) {
		return nil, "", fmt.Errorf("%w: %q (searched %s; set NWC_CODECS or give the codec folder)", ErrNoCodec, name, fsName(fsys))
	}
	return fsys, name, nil
}

// Identity names a trained codec and its content hash (sha256 over
// decoder.onnx and entropy.json), which a .nwc file records so that it is
// never decoded with a different codec.
type Identity struct {
	Name string
	Hash [32]byte
}

// Identify reads the identity of codec folder name in fsys.
func Identify(fsys fs.FS, name string) (Identity, error) {
	h := sha256.New()
	for _, f := range []string{DecoderFile, EntropyFile} {
		b, err := fs.ReadFile(fsys, path.Join(name, f))
		if err != nil {
			return Identity{}, fmt.Errorf("codec %s: %w", name, err)
		}
		h.Write(b)
	}
	id := Identity{Name: name}
	copy(id.Hash[:], h.Sum(nil))
	return id, nil
}

// Card is what nwc reads from a codec's card.json (the file holds more:
// training data, schedule, architecture).
type Card struct {
	// BitsPerWeight is the rate measured on held-out weights with the
	// method's level mix (NaN when the card has none).
	BitsPerWeight float64
	Raw           json.RawMessage
}

// ReadCard reads name/card.json from fsys. The rate is the first of
// validation.mixed_go_bpw, bits_per_weight_real, bits_per_weight,
// bits_per_weight_estimate, or a top-level bits_per_weight.
func ReadCard(fsys fs.FS, name string) (Card, error) {
	b, err := fs.ReadFile(fsys, path.Join(name, CardFile))
	if err != nil {
		return Card{}, fmt.Errorf("%w: %v", ErrModel, err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return Card{}, fmt.Errorf("%w: %s/%s is not a JSON object: %v", ErrModel, name, CardFile, err)
	}
	c := Card{BitsPerWeight: math.NaN(), Raw: b}
	for _, keys := range [][]string{
		{"validation", "mixed_go_bpw"}, {"validation", "bits_per_weight_real"}, {"validation", "bits_per_weight"},
		{"validation", "bits_per_weight_estimate"}, {"bits_per_weight"},
	} {
		var v any = m
		for _, k := range keys {
			o, ok := v.(map[string]any)
			if !ok {
				v = nil
				break
			}
			v = o[k]
		}
		if f, ok := v.(float64); ok {
			c.BitsPerWeight = f
			break
		}
	}
	return c, nil
}

// Info summarizes a trained codec found in a codec file system.
type Info struct {
	Name          string  `json:"name"`
	BitsPerWeight float64 `json:"bits_per_weight"` // measured on validation data (card)
}

// List returns the codecs in fsys (nil: DefaultCodecs) sorted by their
// measured bits/weight.
func List(fsys fs.FS) []Info {
	if fsys == nil {
		fsys = DefaultCodecs()
	}
	ents, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil
	}
	var out []Info
	for _, e := range ents {
		if !e.IsDir() || !IsCodec(fsys, e.Name()) {
			continue
		}
		bits := math.NaN()
		if c, err := ReadCard(fsys, e.Name()); err == nil {
			bits = c.BitsPerWeight
		}
		out = append(out, Info{Name: e.Name(), BitsPerWeight: bits})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].BitsPerWeight < out[j].BitsPerWeight })
	return out
}

// DefaultFamily is the codec family `nwc compress --codec nwc --bits B`
// picks from (the member closest to B): the W=128 D=2 encoder and entropy
// tables with a W=32 D=1 decoder distilled against them, which decodes
// ~18x fewer multiply-adds per weight at the same bytes and within ~0.01
// bit/weight of the W=128 D=2 decoder's KL (README, "Choosing the default
// codec"; docs/results/pareto-smollm2-135m.md).
const DefaultFamily = "nwc-w128d2-dw32d1"

// lambdaPart matches the "-l<lambda>" part of a codec name.
var lambdaPart = regexp.MustCompile(`-l[0-9]+(\.[0-9]+)?(-|$)`)

// Family returns the family of a codec name: the name without its
// "-l<lambda>" part (nwc-gain-l300 -> nwc-gain; nwc-w128d2-l300-dw32d1 ->
// nwc-w128d2-dw32d1). Members of a family share an architecture and differ
// in rate.
func Family(name string) string { return lambdaPart.ReplaceAllString(name, "$2") }

// familyReach is how far (bits/weight) the closest member of DefaultFamily
// may be from the asked rate before ForBits looks at every codec.
const familyReach = 0.5

// ForBits picks the codec of DefaultFamily in fsys (nil: DefaultCodecs)
// whose measured rate is closest to bits; when fsys has no member of that
// family within familyReach of bits, the closest codec of any family.
func ForBits(fsys fs.FS, bits float64) (Info, error) {
	info, err := ForBitsIn(fsys, DefaultFamily, bits)
	if err == nil && math.Abs(info.BitsPerWeight-bits) <= familyReach {
		return info, nil
	}
	if err != nil && !errors.Is(err, ErrNoCodec) {
		return info, err
	}
	return ForBitsIn(fsys, "", bits)
}

// ForBitsIn picks the codec of family (see Family; "" for any) in fsys
// (nil: DefaultCodecs) whose measured rate is closest to bits.
func ForBitsIn(fsys fs.FS, family string, bits float64) (Info, error) {
	if fsys == nil {
		fsys = DefaultCodecs()
	}
	best, found := Info{}, false
	for _, c := range List(fsys) {
		if math.IsNaN(c.BitsPerWeight) || (family != "" && Family(c.Name) != family) {
			continue
		}
		if !found || math.Abs(c.BitsPerWeight-bits) < math.Abs(best.BitsPerWeight-bits) {
			best, found = c, true
		}
	}
	if !found {
		what := "codec"
		if family != "" {
			what = "codec of family " + family
		}
		return best, fmt.Errorf("%w: no %s with a measured rate in %s", ErrNoCodec, what, fsName(fsys))
	}
	return best, nil
}
