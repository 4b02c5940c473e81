package main

import (
	"context"
	"strings"
	"testing"

	"github.com/nwc-project/nwc/loader/codec"
)

func TestGroupCodec(t *testing.T) {
	for _, c := range []struct {
		name  string
		group int
		act   bool
		want  string
	}{{"gptq-g128", 0, false, "gptq-g128"}, {"gptq-g128", 64, false, "gptq-g64"}, {"rtn-g128", 32, false, "rtn-g32"},
		{"gptq-g128", 32, true, "gptq-g32:act"}, {"gptq-g64:act", 0, true, "gptq-g64:act"}, {"nwc:x", 0, false, "nwc:x"}} {
		got, err := groupCodec(c.name, c.group, c.act)
		if err != nil || got != c.want {
			t.Errorf("%s --group %d --act-order=%v: %q, %v; want %q", c.name, c.group, c.act, got, err, c.want)
		}
	}
	for _, c := range []struct {
		name  string
		group int
		act   bool
	}{{"nwc", 64, false}, {"rtn-row", 64, false}, {"gptq-g128", 48, false}, {"rtn-g128", 0, true}, {"ecsq", 0, true}, {"gptq-g128:x", 0, true}} {
		if got, err := groupCodec(c.name, c.group, c.act); err == nil {
			t.Errorf("%s --group %d --act-order=%v accepted as %q", c.name, c.group, c.act, got)
		}
	}
	if _, _, err := codec.Lookup("gptq-g32:act"); err != nil {
		t.Error(err)
	}
}

// TestCompressCalibFlag: --calib takes onepass or sequential, and
// sequential excludes --no-calib (both refused before the model is opened).
func TestCompressCalibFlag(t *testing.T) {
	for _, args := range [][]string{
		{"--model", "none.gguf", "-o", "x.nwc", "--codec", "gptq-g128", "--calib", "twopass"},
		{"--model", "none.gguf", "-o", "x.nwc", "--codec", "gptq-g128", "--calib", "sequential", "--no-calib"},
	} {
		err := runCompress(context.Background(), args)
		if err == nil || !strings.Contains(err.Error(), "--calib") {
			t.Errorf("%v: %v", args, err)
		}
	}
}

// TestCompressUniformLevelsFlag: the level ablation is refused for codecs
// other than nwc, before any file is opened.
func TestCompressUniformLevelsFlag(t *testing.T) {
	for _, c := range []string{"ecsq", "gptq-g128", "rtn-g128"} {
		err := runCompress(context.Background(), []string{"--model", "none.gguf", "-o", "x.nwc", "--codec", c, "--uniform-levels"})
		if err == nil || !strings.Contains(err.Error(), "--uniform-levels") || !strings.Contains(err.Error(), "does not take") {
			t.Errorf("%s: %v", c, err)
		}
	}
}

// TestCompressTuneRowScalesFlag: --tune-row-scales is refused for codecs
// without one scale per row.
func TestCompressTuneRowScalesFlag(t *testing.T) {
	for _, c := range []string{"gptq-g128", "rtn-g128", "lossless", "f16"} {
		err := runCompress(context.Background(), []string{"--model", "none.gguf", "-o", "x.nwc", "--codec", c, "--tune-row-scales"})
		if err == nil || !strings.Contains(err.Error(), "--tune-row-scales") || !strings.Contains(err.Error(), "does not take") {
			t.Errorf("%s: %v", c, err)
		}
	}
}
