package report

import (
	"bytes"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReport(t *testing.T) {
	r := &Report{Title: "test", Model: "m", Text: "t", SeqLen: 8, Windows: 2, RefPerplexity: 10, Command: "nwc bench rd",
		Points: []Point{
			{Method: "rtn-g128", Setting: "4 bits", BitsPerWeight: 4.25, Perplexity: 12, MeanKL: 0.05, Tokens: 14},
			{Method: "rtn-g128", Setting: "3 bits", BitsPerWeight: 3.25, FileBits: 4.5, Perplexity: 20, MeanKL: 0.3, Tokens: 14, CompressSeconds: 12.34},
			{Method: "rtn-row", Setting: "4 bits", BitsPerWeight: 4.05, Perplexity: 15, MeanKL: 0.1, Tokens: 14},
		},
		Notes: []string{"calibrated"}}
	if !r.Has("rtn-row", "4 bits") || r.Has("rtn-row", "3 bits") {
		t.Fatal("Has")
	}
	var md bytes.Buffer
	if err := r.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(md.String(), "| rtn-g128 | 3 bits | 3.250 | 4.500 | 20.0000 | 0.30000 | 12.3 |  |") || !strings.Contains(md.String(), "\n- calibrated\n") {
		t.Fatalf("table:\n%s", md.String())
	}
	path := filepath.Join(t.TempDir(), "rd.png")
	if err := r.WritePlot(path); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	if img.Bounds().Dx() < 500 {
		t.Fatalf("plot too small: %v", img.Bounds())
	}
}

// One point (a bench's first write), or points without KL: a plot, never a
// panic.
func TestReportPlotDegenerate(t *testing.T) {
	for _, pts := range [][]Point{
		{{Method: "nwc", Setting: "a", BitsPerWeight: 2.625, Perplexity: 43.86, MeanKL: 0.557, Tokens: 8188}},
		{{Method: "nwc", Setting: "a", BitsPerWeight: 3, Perplexity: 30}, {Method: "rtn", Setting: "b", BitsPerWeight: 3, Perplexity: 30}},
	} {
		r := &Report{Title: "t", Model: "m", RefPerplexity: 24.77, Points: pts}
		if err := r.WritePlot(filepath.Join(t.TempDir(), "p.png")); err != nil {
			t.Fatal(err)
		}
	}
}
