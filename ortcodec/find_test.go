package ortcodec

import (
	"errors"
	"testing"
	"testing/fstest"
)

func TestFamily(t *testing.T) {
	for name, want := range map[string]string{
		"nwc-w128d2-l300":        "nwc-w128d2",
		"nwc-gain-l100":          "nwc-gain",
		"nwc-w128d2-l300-dw32d1": "nwc-w128d2-dw32d1",
		"nwc-w32d1-l1000":        "nwc-w32d1",
		"nwc-w64d1-l2.5":         "nwc-w64d1",
		"tinycodec":              "tinycodec",
		"nwc-lab-l":              "nwc-lab-l",
	} {
		if got := Family(name); got != want {
			t.Errorf("Family(%q) = %q, want %q", name, got, want)
		}
	}
}

func TestForBitsFamilies(t *testing.T) {
	fsys := fstest.MapFS{}
	add := func(name, bpw string) {
		for _, f := range []string{EncoderFile, DecoderFile, EntropyFile} {
			fsys[name+"/"+f] = &fstest.MapFile{Data: []byte("x")}
		}
		fsys[name+"/"+CardFile] = &fstest.MapFile{Data: []byte(`{"validation":{"mixed_go_bpw":` + bpw + `}}`)}
	}
	add("nwc-gain-l100", "3.0")
	add("nwc-gain-l300", "3.9")
	add("nwc-w32d1-l300", "3.8")
	for _, c := range []struct {
		family string
		bits   float64
		want   string
	}{
		{"nwc-gain", 4, "nwc-gain-l300"},
		{"nwc-gain", 3.2, "nwc-gain-l100"},
		{"nwc-w32d1", 3, "nwc-w32d1-l300"},
		{"", 3.82, "nwc-w32d1-l300"},
	} {
		got, err := ForBitsIn(fsys, c.family, c.bits)
		if err != nil || got.Name != c.want {
			t.Errorf("ForBitsIn(%q, %g) = %q, %v; want %q", c.family, c.bits, got.Name, err, c.want)
		}
	}
	if _, err := ForBitsIn(fsys, "nwc-w512d4", 4); !errors.Is(err, ErrNoCodec) {
		t.Errorf("missing family: %v, want ErrNoCodec", err)
	}
	// DefaultFamily's members win within familyReach; beyond it, any codec.
	add(DefaultFamily+"-l300", "3.9")
	if got, err := ForBits(fsys, 3.82); err != nil || got.Name != DefaultFamily+"-l300" {
		t.Errorf("ForBits within the default family's reach: %q, %v", got.Name, err)
	}
	if got, err := ForBits(fsys, 3.0); err != nil || got.Name != "nwc-gain-l100" {
		t.Errorf("ForBits beyond the default family's reach: %q, %v", got.Name, err)
	}
	delete(fsys, DefaultFamily+"-l300/"+CardFile)
	for _, f := range []string{EncoderFile, DecoderFile, EntropyFile} {
		delete(fsys, DefaultFamily+"-l300/"+f)
	}
	// No member of DefaultFamily here: ForBits takes the closest of any.
	if got, err := ForBits(fsys, 3.82); err != nil || got.Name != "nwc-w32d1-l300" {
		t.Errorf("ForBits without the default family: %q, %v", got.Name, err)
	}
}
