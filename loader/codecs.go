package loader

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/nwc-project/nwc/ortcodec"
)

// CodecSearchPath lists the folders searched for trained codecs, in order:
// the folders in $NWC_CODECS (separated by ':'), then models/ beside the
// executable's folder (bin/../models), then ./models.
func CodecSearchPath() []string {
	var dirs []string
	if env := os.Getenv("NWC_CODECS"); env != "" {
		dirs = append(dirs, filepath.SplitList(env)...)
	}
	if exe, err := os.Executable(); err == nil {
		dirs = append(dirs, filepath.Join(filepath.Dir(filepath.Dir(exe)), "models"))
	}
	return append(dirs, "models")
}

// ErrNoCodec: no trained codec folder of that name was found.
var ErrNoCodec = errors.New("trained codec not found")

func isCodecDir(dir string) bool {
	for _, f := range []string{ortcodec.EncoderFile, ortcodec.DecoderFile, ortcodec.EntropyFile} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.IsDir() {
			return false
		}
	}
	return true
}

// FindCodec returns the folder of the trained codec called name (a path to
// a codec folder is accepted too).
func FindCodec(name string) (string, error) {
	if strings.ContainsRune(name, filepath.Separator) && isCodecDir(name) {
		return name, nil
	}
	if name == "" || strings.ContainsAny(name, `/\`) || name == "." || name == ".." {
		return "", fmt.Errorf("%w: %q", ErrNoCodec, name)
	}
	search := CodecSearchPath()
	for _, d := range search {
		if dir := filepath.Join(d, name); isCodecDir(dir) {
			return dir, nil
		}
	}
	return "", fmt.Errorf("%w: %q (searched %s; set NWC_CODECS)", ErrNoCodec, name, strings.Join(search, ", "))
}

// CodecInfo summarizes a shipped codec from its card.json.
type CodecInfo struct {
	Name          string  `json:"name"`
	Dir           string  `json:"dir"`
	BitsPerWeight float64 `json:"bits_per_weight"` // measured on validation data (card)
}

// ListCodecs returns the trained codecs found on the search path (first
// occurrence of each name), sorted by their measured bits/weight.
func ListCodecs() []CodecInfo {
	seen := map[string]bool{}
	var out []CodecInfo
	for _, d := range CodecSearchPath() {
		ents, err := os.ReadDir(d)
		if err != nil {
			continue
		}
		for _, e := range ents {
			dir := filepath.Join(d, e.Name())
			if !e.IsDir() || seen[e.Name()] || !isCodecDir(dir) {
				continue
			}
			seen[e.Name()] = true
			out = append(out, CodecInfo{Name: e.Name(), Dir: dir, BitsPerWeight: cardBits(dir)})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].BitsPerWeight < out[j].BitsPerWeight })
	return out
}

// cardBits reads the validation bits/weight from card.json: the first of
// the keys below that holds a number (NaN when none does).
func cardBits(dir string) float64 {
	b, err := os.ReadFile(filepath.Join(dir, ortcodec.CardFile))
	if err != nil {
		return math.NaN()
	}
	var card map[string]any
	if json.Unmarshal(b, &card) != nil {
		return math.NaN()
	}
	for _, path := range [][]string{
		{"validation", "mixed_go_bpw"}, {"validation", "bits_per_weight_real"}, {"validation", "bits_per_weight"},
		{"validation", "bits_per_weight_estimate"}, {"bits_per_weight"},
	} {
		var v any = card
		for _, k := range path {
			m, ok := v.(map[string]any)
			if !ok {
				v = nil
				break
			}
			v = m[k]
		}
		if f, ok := v.(float64); ok {
			return f
		}
	}
	return math.NaN()
}

// CodecForBits picks the shipped codec whose measured rate is closest to bits.
func CodecForBits(bits float64) (CodecInfo, error) {
	best, found := CodecInfo{}, false
	for _, c := range ListCodecs() {
		if math.IsNaN(c.BitsPerWeight) {
			continue
		}
		if !found || math.Abs(c.BitsPerWeight-bits) < math.Abs(best.BitsPerWeight-bits) {
			best, found = c, true
		}
	}
	if !found {
		return best, fmt.Errorf("%w: no codec with a measured rate on %s", ErrNoCodec, strings.Join(CodecSearchPath(), ", "))
	}
	return best, nil
}
