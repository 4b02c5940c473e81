package report

import (
	"fmt"
	"io"
	"strings"
)

// EmbedPoint is one measured configuration of a sentence encoder.
type EmbedPoint struct {
	Method        string  `json:"method"`
	Setting       string  `json:"setting"`
	BitsPerWeight float64 `json:"bits_per_weight"` // block linears, from file bytes
	FileBits      float64 `json:"file_bits_per_weight,omitempty"`
	MeanCosine    float64 `json:"mean_cosine"`
	MinCosine     float64 `json:"min_cosine"`
	P1Cosine      float64 `json:"p1_cosine"`
	TopK          int     `json:"top_k"`
	TopKAgreement float64 `json:"top_k_agreement"`
	// CompressSeconds: wall time of the compression (informational).
	CompressSeconds float64 `json:"compress_seconds,omitempty"`
}

// EmbedReport is a set of embedding-fidelity points (eval/embed) of one
// model against its uncompressed reference.
type EmbedReport struct {
	Title     string `json:"title"`
	Model     string `json:"model"`
	Sentences int    `json:"sentences"`
	// SentenceRule says how the sentences were chosen.
	SentenceRule string       `json:"sentence_rule"`
	Command      string       `json:"command"`
	Notes        []string     `json:"notes,omitempty"`
	Points       []EmbedPoint `json:"points"`
}

// Has reports whether the report holds a point of this method and setting.
func (r *EmbedReport) Has(method, setting string) bool { return hasPoint(r.Points, method, setting) }

// Len is the number of points.
func (r *EmbedReport) Len() int { return len(r.Points) }

func (p EmbedPoint) id() (method, setting string, bits float64) {
	return p.Method, p.Setting, p.BitsPerWeight
}

// WriteMarkdown writes the table.
func (r *EmbedReport) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	k := 10
	if len(r.Points) > 0 {
		k = r.Points[0].TopK
	}
	fmt.Fprintf(&b, "# %s\n\nModel `%s` against its own uncompressed embeddings, %d sentences (%s).\n\n", r.Title, r.Model, r.Sentences, r.SentenceRule)
	fmt.Fprintf(&b, "Regenerate: `%s`\n\n", r.Command)
	fmt.Fprintf(&b, "| method | setting | bits/weight (linear weights, from file bytes) | bits/weight (whole file) | mean cosine | p1 cosine | min cosine | top-%d agreement | compress s |\n|---|---|---|---|---|---|---|---|---|\n", k)
	for _, p := range sortedPoints(r.Points) {
		fmt.Fprintf(&b, "| %s | %s | %.3f | %.3f | %.5f | %.5f | %.5f | %.4f | %s |\n", p.Method, p.Setting, p.BitsPerWeight, p.FileBits,
			p.MeanCosine, p.P1Cosine, p.MinCosine, p.TopKAgreement, secs(p.CompressSeconds))
	}
	return writeNotes(w, &b, r.Notes)
}

// WriteJSON writes the report as JSON.
func (r *EmbedReport) WriteJSON(w io.Writer) error { return writeIndentedJSON(w, r) }

// WritePlot writes a PNG with two log-scale panels against bits/weight, one
// line per method: 1 - mean cosine, and 1 - top-k agreement (a point whose
// agreement is exactly 1 has no place on the log axis and is left out).
func (r *EmbedReport) WritePlot(path string) (err error) {
	defer func() { // gonum/plot panics on some degenerate inputs: an error, not a crash
		if p := recover(); p != nil {
			err = fmt.Errorf("report: plot %s: %v", path, p)
		}
	}()
	k := 10
	rp := &Report{Title: r.Title}
	for _, p := range r.Points {
		k = p.TopK
		rp.Points = append(rp.Points, Point{Method: p.Method, Setting: p.Setting, BitsPerWeight: p.BitsPerWeight,
			Perplexity: 1 - p.MeanCosine, MeanKL: 1 - p.TopKAgreement})
	}
	return rp.writePanels(path, "1 - mean cosine to the reference embedding", 0, fmt.Sprintf("1 - top-%d retrieval agreement", k))
}
