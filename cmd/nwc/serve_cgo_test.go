//go:build cgo

package main

import (
	"context"
	"errors"
	"testing"
)

func TestServeFlags(t *testing.T) {
	ctx := context.Background()
	for _, args := range [][]string{{}, {"--model", "m", "extra"}} {
		if _, err := capture(t, func() error { return runServe(ctx, args) }); !errors.Is(err, errUsage) {
			t.Errorf("%v: %v, want a usage error", args, err)
		}
	}
	for _, args := range [][]string{
		{"--model", "m", "--parallel", "0"},
		{"--model", "m", "--max-queue", "-1"},
		{"--model", "m", "--max-tokens", "0"},
	} {
		if _, err := capture(t, func() error { return runServe(ctx, args) }); err == nil || errors.Is(err, errUsage) {
			t.Errorf("%v: %v, want an error", args, err)
		}
	}
	for model, want := range map[string]string{"smollm2-135m": "smollm2-135m", "/tmp/serve-s4.nwc": "serve-s4",
		"dir/model.Q8.gguf": "model.Q8", "hf-folder/": "hf-folder"} {
		if got := defaultModelID(model); got != want {
			t.Errorf("defaultModelID(%q) = %q, want %q", model, got, want)
		}
	}
}
