package plugin_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nwc-project/nwc/plugin"
)

// tinyGain is a tiny model whose block linears are coded with a
// network-free (gain) codec: decodable with and without cgo.
const tinyGain = "tiny-gain.nwc"

// decodedDigest is the sha256 of every tensor of path decoded to float32,
// in file order.
func decodedDigest(path string) (string, error) {
	ctx := context.Background()
	m, err := plugin.Open(ctx, path)
	if err != nil {
		return "", err
	}
	defer m.Close()
	h := sha256.New()
	var buf []byte
	for _, ti := range m.Tensors() {
		if buf, err = m.ReadTensor(ctx, ti.Name, plugin.F32, buf); err != nil {
			return "", err
		}
		h.Write(buf)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// TestGainDecodesAnyBuild: a gain-coded file decodes to the same bytes in
// this build as in the cgo build that wrote the digest (TestUpdateTiny), so
// a build without cgo (no ONNX Runtime) reads files of the gain codecs.
func TestGainDecodesAnyBuild(t *testing.T) {
	path := filepath.Join("testdata", tinyGain)
	want, err := os.ReadFile(path + ".sha256")
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodedDigest(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != strings.TrimSpace(string(want)) {
		t.Fatalf("%s decodes to sha256 %s, the cgo build that wrote it to %s", path, got, want)
	}
}
