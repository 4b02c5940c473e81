//go:build cgo

package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nwc-project/nwc/internal/ortenv"
	"github.com/nwc-project/nwc/loader"
	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/stage"
)

// requireORT skips (or, with NWC_REQUIRE_ORT=1, fails) without ONNX Runtime.
func requireORT(t *testing.T) {
	t.Helper()
	if err := ortenv.Init(""); err != nil {
		if os.Getenv("NWC_REQUIRE_ORT") == "1" {
			t.Fatalf("NWC_REQUIRE_ORT=1: %v", err)
		}
		t.Skipf("ONNX Runtime: %v", err)
	}
}

// TestDecodeFileNWC decodes the tiny neural-coded file in a child process.
func TestDecodeFileNWC(t *testing.T) {
	requireORT(t)
	const tinyNWC = "../../plugin/testdata/tiny-nwc.nwc"
	var run decodeRun
	if _, err := runChild(context.Background(), decodeKnobs{Threads: 1}.childArgs(tinyNWC, "cpu"), &run); err != nil {
		t.Fatal(err)
	}
	checkDecodeRun(t, tinyNWC, run.Weights, run.LinearWeights, run.Stages, stage.Read, stage.Checksum)
	if strings.Join(run.Codecs, ",") != "nwc" {
		t.Errorf("codecs %v", run.Codecs)
	}
}

// TestBenchLoad runs bench load on smollm2-135m with a quickly made rtn
// file: every source is loaded in a child and the report has its ratio.
func TestBenchLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("loads a real model several times")
	}
	requireORT(t)
	src, _, err := loader.Open("smollm2-135m", codec.Env{})
	if err != nil {
		if os.Getenv("NWC_REQUIRE_MODELS") == "1" {
			t.Fatalf("NWC_REQUIRE_MODELS=1: %v", err)
		}
		t.Skipf("model: %v", err)
	}
	defer src.Close()
	dir := t.TempDir()
	nwc, st := filepath.Join(dir, "m.nwc"), filepath.Join(dir, "m.safetensors")
	ctx := context.Background()
	if _, err := loader.Compress(ctx, src, nwc, loader.CompressOptions{Codec: "rtn-g128", Bits: 4}); err != nil {
		t.Fatal(err)
	}
	nf, err := loader.OpenNWC(nwc, codec.Env{})
	if err != nil {
		t.Fatal(err)
	}
	err = loader.Decompress(ctx, nf, st, loader.DecompressOptions{})
	nf.Close()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := capture(t, func() error {
		return runBenchLoad(ctx, []string{"--nwc", nwc, "--st", st, "--repeat", "1", "--out", dir, "--name", "l"})
	}); err != nil {
		t.Fatal(err)
	}
	var rep loadReport
	if err := readJSONFile(filepath.Join(dir, "l.json"), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Rows) != 3 || rep.Rows[0].Kind != loadGGUF || rep.Rows[0].Ratio != 1 || rep.Rows[1].Error != "" || rep.Rows[1].Ratio <= 0 {
		t.Fatalf("rows %+v", rep.Rows)
	}
	for _, row := range rep.Rows {
		if row.Error != "" {
			t.Logf("%s: %s", row.Kind, row.Error)
			continue
		}
		if row.Weights != rep.Rows[0].Weights || row.ReadySeconds <= 0 || row.WeightsSeconds <= 0 {
			t.Errorf("%s: %+v", row.Kind, row)
		}
	}
	if rep.Rows[1].Stages[stage.Entropy] <= 0 {
		t.Errorf("nwc row: no entropy stage: %v", rep.Rows[1].Stages)
	}
}
