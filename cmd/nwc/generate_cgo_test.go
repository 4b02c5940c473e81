//go:build cgo

package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"testing"

	"github.com/nwc-project/nwc/internal/ortenv/orttest"
	"github.com/nwc-project/nwc/loader/refmodel"
)

func TestGenerateFlags(t *testing.T) {
	ctx := context.Background()
	for _, args := range [][]string{{}, {"--model", "m", "extra"}} {
		if _, err := capture(t, func() error { return runGenerate(ctx, args) }); !errors.Is(err, errUsage) {
			t.Errorf("%v: %v, want a usage error", args, err)
		}
	}
	for _, args := range [][]string{
		{"--model", "m", "--prompt", "x", "--max-tokens", "0"},
		{"--model", "m", "--prompt", "x", "--top-p", "1.5"},
		{"--model", "m", "--prompt", "x", "--temperature", "-1"},
	} {
		if _, err := capture(t, func() error { return runGenerate(ctx, args) }); err == nil || errors.Is(err, errUsage) {
			t.Errorf("%v: %v, want an error", args, err)
		}
	}
}

// TestGenerateSmolLM2: --chat --json on the reference model answers the
// capital question and stops at <|im_end|>.
func TestGenerateSmolLM2(t *testing.T) {
	if _, err := refmodel.Lookup("smollm2-135m"); err != nil {
		if os.Getenv("NWC_REQUIRE_MODELS") == "1" {
			t.Fatalf("NWC_REQUIRE_MODELS=1: %v", err)
		}
		t.Skipf("reference model not installed: %v", err)
	}
	orttest.Require(t)
	out, err := capture(t, func() error {
		return runGenerate(context.Background(), []string{"--model", "smollm2-135m", "--chat", "--prompt", "What is the capital of France?",
			"--max-tokens", "16", "--threads", "2", "--json"})
	})
	if err != nil {
		t.Fatal(err)
	}
	var r generateJSON
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if r.Text != "The capital of France is Paris." || r.StopReason != "stop" || len(r.PromptIDs) != 37 {
		t.Fatalf("%+v", r)
	}
}
