package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/nwc-project/nwc/eval/report"
	"github.com/nwc-project/nwc/loader"
	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/stage"
	"github.com/nwc-project/nwc/ortcodec"
)

// childMainEnv makes the test binary run main() instead of the tests: the
// bench commands re-exec themselves for every measurement.
const childMainEnv = "NWC_TEST_BENCH_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childMainEnv) == "1" {
		main()
		os.Exit(0)
	}
	childEnv = []string{childMainEnv + "=1"}
	os.Exit(m.Run())
}

const tinyRTN = "../../plugin/testdata/tiny-rtn.nwc"

func TestParseCodecSpecs(t *testing.T) {
	trained := []ortcodec.Info{{Name: "nwc-a"}, {Name: "nwc-gain-b"}}
	got, err := parseCodecSpecs("shipped", trained)
	if err != nil {
		t.Fatal(err)
	}
	var labels, codecs []string
	for _, s := range got {
		labels, codecs = append(labels, s.Label), append(codecs, s.Codec)
	}
	if l := strings.Join(labels, ","); l != "nwc-a,nwc-gain-b,rtn-g128@4,ecsq@4,lossless" {
		t.Errorf("shipped labels %s", l)
	}
	if c := strings.Join(codecs, ","); c != "nwc:nwc-a,nwc:nwc-gain-b,rtn-g128,ecsq,lossless" {
		t.Errorf("shipped codecs %s", c)
	}
	if got[2].Bits != 4 || got[4].Bits != 0 {
		t.Errorf("bits %v", got)
	}
	got, err = parseCodecSpecs(" nwc:other , f16,gptq-g128@3", trained)
	if err != nil || len(got) != 3 || got[0].Label != "other" || got[0].Codec != "nwc:other" || got[2].Bits != 3 {
		t.Errorf("got %+v, %v", got, err)
	}
	for _, bad := range []string{"", "nope", "rtn-g128", "rtn-g128@x", "rtn-g128@-1", "ecsq@99"} {
		if _, err := parseCodecSpecs(bad, trained); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	if _, err := parseCodecSpecs("shipped", nil); err == nil {
		t.Error("shipped without trained codecs: no error")
	}
}

func TestParseSweep(t *testing.T) {
	axes, err := parseSweep([]string{"batch=4096,16384,65536", "threads=1,2", "sessions=1,2"})
	if err != nil {
		t.Fatal(err)
	}
	ks := combinations(decodeKnobs{Prefetch: 3}, axes)
	if len(ks) != 12 {
		t.Fatalf("%d combinations, want 12", len(ks))
	}
	if ks[0] != (decodeKnobs{Batch: 4096, Threads: 1, Sessions: 1, Prefetch: 3}) || ks[11] != (decodeKnobs{Batch: 65536, Threads: 2, Sessions: 2, Prefetch: 3}) {
		t.Errorf("combinations %+v ... %+v", ks[0], ks[11])
	}
	for _, bad := range [][]string{{"batch"}, {"batch="}, {"color=1"}, {"threads=a"}, {"threads=-1"}, {"threads=1", "threads=2"}} {
		if _, err := parseSweep(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	if len(combinations(decodeKnobs{}, nil)) != 1 {
		t.Error("no axes: want the base knobs only")
	}
}

func TestBenchDecodeUsage(t *testing.T) {
	ctx := context.Background()
	for _, args := range [][]string{
		nil, {"nope"},
		{"decode", "--files", tinyRTN, "--codecs", "lossless"},
		{"decode", "--files", tinyRTN + "," + tinyRTN, "--sweep", "threads=1,2"},
		{"decode", "--files", tinyRTN, "stray"},
		{"decode", "--files", tinyRTN, "--repeat", "0"},
		{"decode", "--files", tinyRTN, "--threads", "-1"},
		{"decode", "--bogus"},
		{"pareto", "--rd", "x.json"},
	} {
		if _, err := capture(t, func() error { return runBench(ctx, args) }); err == nil {
			t.Errorf("bench %q: no error", args)
		}
	}
}

// fileWeights counts the weights of every tensor of a .nwc file.
func fileWeights(t *testing.T, path string) (all, linear int64) {
	t.Helper()
	nf, err := loader.OpenNWC(path, codec.Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer nf.Close()
	for _, ti := range nf.Tensors() {
		all += ti.NumElements()
		if loader.IsBlockLinear(ti) {
			linear += ti.NumElements()
		}
	}
	return all, linear
}

// checkDecodeRun checks what is not timing: the weights are the file's and
// the stages that must have run took some time.
func checkDecodeRun(t *testing.T, path string, weights, linear int64, stages stageSeconds, want ...stage.Stage) {
	t.Helper()
	all, lin := fileWeights(t, path)
	if weights != all || linear != lin {
		t.Errorf("%s: %d weights (%d block linears), the file has %d (%d)", path, weights, linear, all, lin)
	}
	if stages.sum() <= 0 {
		t.Errorf("%s: stage sum %v", path, stages)
	}
	for _, s := range want {
		if stages[s] <= 0 {
			t.Errorf("%s: stage %s not timed: %v", path, s, stages)
		}
	}
}

func TestDecodeFileStages(t *testing.T) {
	for _, prefetch := range []int{0, 2} {
		run, err := decodeFile(context.Background(), tinyRTN, codec.Env{}, prefetch)
		if err != nil {
			t.Fatal(err)
		}
		checkDecodeRun(t, tinyRTN, run.Weights, run.LinearWeights, run.Stages, stage.Read, stage.Checksum, stage.Entropy, stage.Rescale)
		if run.Tensors != 4 || strings.Join(run.Codecs, ",") != "rtn" || run.LinearBits <= 0 {
			t.Errorf("prefetch %d: %+v", prefetch, run)
		}
	}
	if _, err := decodeFile(context.Background(), "no-such.nwc", codec.Env{}, 0); err == nil || !strings.Contains(err.Error(), "no-such.nwc") {
		t.Errorf("missing file: %v", err)
	}
}

// TestBenchDecodeFiles runs the whole command: children, medians, report.
func TestBenchDecodeFiles(t *testing.T) {
	dir := t.TempDir()
	out, err := capture(t, func() error {
		return runBenchDecode(context.Background(), []string{"--files", tinyRTN, "--repeat", "2", "--out", dir, "--name", "d"})
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "| tiny-rtn | 4.") {
		t.Errorf("table:\n%s", out)
	}
	var rep decodeReport
	if err := readJSONFile(filepath.Join(dir, "d.json"), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Rows) != 1 || len(rep.Rows[0].Runs) != 2 || rep.Repeat != 2 {
		t.Fatalf("report %+v", rep)
	}
	row := rep.Rows[0]
	var st stageSeconds
	for i, s := range row.Stages {
		st[i] = s.Seconds
	}
	checkDecodeRun(t, tinyRTN, row.Weights, row.LinearWeights, st, stage.Entropy, stage.Rescale)
	if runtime.GOOS == "linux" && row.PeakRSS < 1<<20 {
		t.Errorf("peak RSS %d", row.PeakRSS)
	}
	for _, ext := range []string{".md", ".png"} {
		if fi, err := os.Stat(filepath.Join(dir, "d"+ext)); err != nil || fi.Size() == 0 {
			t.Errorf("d%s: %v", ext, err)
		}
	}

	// A sweep: one row per combination, the knobs reach the child.
	if _, err := capture(t, func() error {
		return runBenchDecode(context.Background(), []string{"--files", tinyRTN, "--repeat", "1", "--out", dir, "--name", "s", "--sweep", "prefetch=0,2", "threads=1"})
	}); err != nil {
		t.Fatal(err)
	}
	if err := readJSONFile(filepath.Join(dir, "s.json"), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Rows) != 2 || rep.Rows[1].Prefetch != 2 || rep.Rows[1].Threads != 1 || !rep.Sweep {
		t.Errorf("sweep rows %+v", rep.Rows)
	}
}

func TestRunChildErrors(t *testing.T) {
	ctx := context.Background()
	var run decodeRun
	// The child fails: the error carries its message (the file's name).
	_, err := runChild(ctx, []string{"bench", "decode", "--child", "no-such.nwc"}, &run)
	var ce *childError
	if err == nil || !strings.Contains(err.Error(), "no-such.nwc") || !errors.As(err, &ce) ||
		!strings.Contains(ce.Message(), "no-such.nwc") || strings.HasPrefix(ce.Message(), "nwc: ") {
		t.Errorf("failing child: %v", err)
	}
	// The child prints something that is not a result.
	if _, err := runChild(ctx, []string{"codecs"}, &run); err == nil || !strings.Contains(err.Error(), "not a result") {
		t.Errorf("text output: %v", err)
	}
}

func TestStageSecondsJSON(t *testing.T) {
	s := stageSeconds{1, 2, 3, 4, 5}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"network":4`) {
		t.Errorf("%s", b)
	}
	var back stageSeconds
	if err := json.Unmarshal(b, &back); err != nil || back != s {
		t.Errorf("round trip %v, %v", back, err)
	}
}

func TestMedian(t *testing.T) {
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Errorf("median %g", m)
	}
	if m := median([]float64{4, 1, 3, 2}); m != 2 {
		t.Errorf("even median %g", m)
	}
	if i := medianIndex([]float64{5, 9, 7}); i != 2 {
		t.Errorf("median index %d", i)
	}
	if median(nil) != 0 {
		t.Error("empty median")
	}
}

func TestLoadReport(t *testing.T) {
	rep := &loadReport{benchMeta: benchMeta{Title: "t", Model: "m", Repeat: 3}, Rows: []loadRow{
		newLoadRow([]loadRun{{Kind: loadGGUF, ReadySeconds: 2, OpenSeconds: 0.1, WeightsSeconds: 1}, {Kind: loadGGUF, ReadySeconds: 1}, {Kind: loadGGUF, ReadySeconds: 3}}),
		{loadRun: loadRun{Kind: loadNWC, ReadySeconds: 3, Stages: stageSeconds{0.1, 0.1, 0.5, 1, 0.2}}},
		{loadRun: loadRun{Kind: loadST}, Error: "no config | here"},
	}}
	rep.ratios()
	if rep.Rows[0].ReadySeconds != 2 || rep.Rows[0].OpenSeconds != 0.1 || rep.Rows[1].Ratio != 1.5 || rep.Rows[2].Ratio != 0 {
		t.Errorf("rows %+v", rep.Rows)
	}
	dir := t.TempDir()
	stem := filepath.Join(dir, "l")
	if err := writeReportFiles(stem, rep.WriteMarkdown, rep, rep.plot); err != nil {
		t.Fatal(err)
	}
	md, _ := os.ReadFile(stem + ".md")
	for _, want := range []string{"| nwc |", "1.50x", "not loadable: no config / here", "network 1.00"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	if fi, err := os.Stat(stem + ".png"); err != nil || fi.Size() == 0 {
		t.Errorf("png: %v", err)
	}
}

func TestBenchPareto(t *testing.T) {
	dir := t.TempDir()
	rd := report.Report{Model: "m", Points: []report.Point{
		{Method: "nwc", Setting: "nwc-w128d2-l300", BitsPerWeight: 3.9, MeanKL: 0.085},
		{Method: "nwc", Setting: "nwc-gain-l300", BitsPerWeight: 3.95, MeanKL: 0.2},
		{Method: "rtn-g128", Setting: "4 bits", BitsPerWeight: 4.27, MeanKL: 0.4},
		{Method: "rtn-g128", Setting: "3 bits", BitsPerWeight: 3.27, MeanKL: 1.8},
		{Method: "ecsq", Setting: "3.9 bits", BitsPerWeight: 3.9, MeanKL: 0.18},
		{Method: "gptq-g128", Setting: "4 bits", BitsPerWeight: 4.27, MeanKL: 0.3},
		{Method: "zz", Setting: "4 bits", BitsPerWeight: 4, MeanKL: 0.3},
		{Method: "nwc", Setting: "nwc-w128d2-l1000", BitsPerWeight: 4.74, MeanKL: 0.026},
	}}
	dec := decodeReport{Rows: []decodeRow{
		{Codec: "nwc-w128d2-l300", WeightsPerSecond: 20e6},
		{Codec: "nwc-gain-l300", WeightsPerSecond: 150e6},
		{Codec: "rtn-g128@4", WeightsPerSecond: 300e6},
		{Codec: "ecsq@4", WeightsPerSecond: 100e6},
	}}
	rdPath, decPath := filepath.Join(dir, "rd.json"), filepath.Join(dir, "dec.json")
	for path, v := range map[string]any{rdPath: rd, decPath: dec} {
		b, _ := json.Marshal(v)
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, err := capture(t, func() error {
		return runBench(context.Background(), []string{"pareto", "--rd", rdPath, "--decode", decPath, "--bits", "4", "--out", dir, "--name", "p"})
	})
	if err != nil {
		t.Fatal(err)
	}
	var rep paretoReport
	if err := readJSONFile(filepath.Join(dir, "p.json"), &rep); err != nil {
		t.Fatal(err)
	}
	got := map[string]paretoPoint{}
	for _, p := range rep.Points {
		got[p.Method+" "+p.Setting] = p
	}
	// l1000 (4.74) is outside 4 +- 0.5; rtn 3 bits too; gptq decodes as
	// rtn; zz has no decode row.
	if len(rep.Points) != 5 || !got["nwc nwc-gain-l300"].Floor || got["nwc nwc-w128d2-l300"].Floor || got["gptq-g128 4 bits"].Codec != "rtn-g128@4" ||
		got["rtn-g128 4 bits"].WeightsPerSecond != 300e6 || got["ecsq 3.9 bits"].Codec != "ecsq@4" {
		t.Errorf("points %+v", rep.Points)
	}
	if len(rep.Missing) != 1 || rep.Missing[0] != "zz 4 bits" {
		t.Errorf("missing %v", rep.Missing)
	}
	if !strings.Contains(out, "nwc-gain-l300 (network-free floor)") {
		t.Errorf("table:\n%s", out)
	}
	if fi, err := os.Stat(filepath.Join(dir, "p.png")); err != nil || fi.Size() == 0 {
		t.Errorf("png: %v", err)
	}
	// Nothing to join.
	if _, err := capture(t, func() error {
		return runBench(context.Background(), []string{"pareto", "--rd", rdPath, "--decode", decPath, "--bits", "9", "--out", dir})
	}); err == nil {
		t.Error("no point at 9 bits: no error")
	}
	if _, err := capture(t, func() error {
		return runBench(context.Background(), []string{"pareto", "--rd", filepath.Join(dir, "none.json"), "--decode", decPath, "--out", dir})
	}); err == nil || !strings.Contains(err.Error(), "none.json") {
		t.Errorf("missing rd file: %v", err)
	}
}
