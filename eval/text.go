package eval

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"
)

// The texts the project carries (eval/testdata, provenance and licences in
// eval/testdata/README.md). They are embedded, so that `nwc eval` finds its
// default text wherever the binary runs.
var (
	//go:embed testdata/wikitext-2-raw-test.txt
	wikiText2 []byte
	//go:embed testdata/calibration-gutenberg.txt
	calibration []byte
)

// Names and sha256 of the carried texts.
const (
	WikiText2Name      = "wikitext-2-raw-test.txt"
	WikiText2SHA256    = "bbf94c53a05abe9ee670d3b6343608095822c85e26de37c70b24fc571964574a"
	CalibrationName    = "calibration-gutenberg.txt"
	CalibrationSHA256  = "9e0d0fff5e40e2b70f71fc6335411059d4b3d7a55a7b360036351e3a4e334052"
	wikiText2Bytes     = 1287656
	calibrationBytes   = 2675112
	defaultTextDisplay = "wikitext-2-raw-test.txt (embedded copy of eval/testdata)"
)

// known maps the base names of the carried texts to their sha256: a file of
// that name is checked whatever directory it is loaded from.
var known = map[string]string{
	WikiText2Name:   WikiText2SHA256,
	CalibrationName: CalibrationSHA256,
}

// Text is an evaluation text.
type Text struct {
	// Name is the file's base name; Source where it came from (a path, or
	// the embedded copy).
	Name, Source string
	// SHA256 of the file's bytes (hex), and whether it was checked against
	// the known value of a carried text.
	SHA256   string
	Verified bool
	// Rows is the number of lines of the file (one trailing newline does
	// not start a row).
	Rows int
	// Joined is the text that is tokenized: the rows joined with "\n\n"
	// (GPTQ convention), or the file as it is when loaded raw.
	Joined string
}

func sum(data []byte) string {
	h := sha256.Sum256(data)
	return hex.EncodeToString(h[:])
}

// JoinRows applies the GPTQ convention to a text file's contents: one
// trailing "\n" is dropped, the remaining text is split at every "\n" into
// rows, and the rows are joined with "\n\n". It returns the joined text and
// the number of rows.
func JoinRows(data string) (string, int) {
	data = strings.TrimSuffix(data, "\n")
	if data == "" {
		return "", 0
	}
	rows := strings.Split(data, "\n")
	return strings.Join(rows, "\n\n"), len(rows)
}

func newText(name, source string, data []byte, raw bool) (*Text, error) {
	t := &Text{Name: name, Source: source, SHA256: sum(data)}
	if want, ok := known[name]; ok {
		if t.SHA256 != want {
			return nil, fmt.Errorf("eval: %s: sha256 %s, want %s (the carried copy of %s was changed or damaged)", source, t.SHA256, want, name)
		}
		t.Verified = true
	}
	if !utf8.Valid(data) {
		return nil, fmt.Errorf("eval: %s is not valid UTF-8", source)
	}
	if raw {
		t.Joined = string(data)
		t.Rows = strings.Count(strings.TrimSuffix(t.Joined, "\n"), "\n") + 1
		if len(data) == 0 {
			t.Rows = 0
		}
	} else {
		t.Joined, t.Rows = JoinRows(string(data))
	}
	return t, nil
}

// LoadText loads an evaluation text and joins its rows with "\n\n" (see
// JoinRows). path "" is the WikiText-2 (raw) test text the project carries
// (embedded, sha256-checked). A file whose base name is that of a carried
// text (wikitext-2-raw-test.txt, calibration-gutenberg.txt) must match its
// sha256; any other file is used as it is, and its sha256 reported.
func LoadText(path string) (*Text, error) {
	if path == "" {
		return newText(WikiText2Name, defaultTextDisplay, wikiText2, false)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("eval: %w", err)
	}
	return newText(filepath.Base(path), path, data, false)
}

// LoadRawText is LoadText without the row joining: Joined is the file as it
// is ("" is the embedded WikiText-2 test text).
func LoadRawText(path string) (*Text, error) {
	if path == "" {
		return newText(WikiText2Name, defaultTextDisplay, wikiText2, true)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("eval: %w", err)
	}
	return newText(filepath.Base(path), path, data, true)
}

// CalibrationText returns the calibration text the project carries (four
// public-domain Project Gutenberg novels, eval/testdata/README.md), as it
// is, sha256-checked.
func CalibrationText() (*Text, error) {
	return newText(CalibrationName, "calibration-gutenberg.txt (embedded copy of eval/testdata)", calibration, true)
}
