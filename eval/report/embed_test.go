package report

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestEmbedReport(t *testing.T) {
	r := &EmbedReport{Title: "t", Model: "minilm-l6", Sentences: 1000, SentenceRule: "rule", Command: "cmd",
		Points: []EmbedPoint{
			{Method: "rtn-g128", Setting: "4 bits", BitsPerWeight: 4.25, MeanCosine: 0.99, MinCosine: 0.95, P1Cosine: 0.96, TopK: 10, TopKAgreement: 0.9},
			{Method: "rtn-g128", Setting: "3 bits", BitsPerWeight: 3.25, MeanCosine: 0.9, MinCosine: 0.7, P1Cosine: 0.75, TopK: 10, TopKAgreement: 0.6},
			{Method: "nwc", Setting: "x", BitsPerWeight: 6.3, MeanCosine: 0.9999, MinCosine: 0.999, P1Cosine: 0.9991, TopK: 10, TopKAgreement: 1},
		}}
	if !r.Has("rtn-g128", "3 bits") || r.Has("rtn-g128", "5 bits") {
		t.Error("Has")
	}
	var md bytes.Buffer
	if err := r.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	s := md.String()
	i3, i4 := strings.Index(s, "| rtn-g128 | 3 bits | 3.250"), strings.Index(s, "| rtn-g128 | 4 bits | 4.250")
	if i3 < 0 || i4 < i3 || !strings.Contains(s, "top-10 agreement") || !strings.Contains(s, "0.99990") {
		t.Errorf("markdown:\n%s", s)
	}
	var js bytes.Buffer
	if err := r.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back EmbedReport
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || len(back.Points) != 3 || back.Points[2].TopKAgreement != 1 {
		t.Errorf("json round trip: %v %+v", err, back)
	}
	png := filepath.Join(t.TempDir(), "e.png")
	if err := r.WritePlot(png); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(png); err != nil || !bytes.HasPrefix(b, []byte("\x89PNG")) {
		t.Errorf("plot: %v", err)
	}
}
