package plugin_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nwc-project/nwc/loader/refmodel"
	"github.com/nwc-project/nwc/plugin"
)

func TestChatTemplate(t *testing.T) {
	ctx := context.Background()
	// A model without one.
	m, err := plugin.Open(ctx, filepath.Join("testdata", "tiny-rtn.nwc"))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := m.ChatTemplate(); !errors.Is(err, plugin.ErrNoChatTemplate) {
		t.Fatalf("tiny model: %v", err)
	}
	path, err := refmodel.Resolve("smollm2-135m")
	if err != nil {
		if os.Getenv("NWC_REQUIRE_MODELS") == "1" {
			t.Fatalf("NWC_REQUIRE_MODELS=1: %v", err)
		}
		t.Skipf("reference model not installed: %v", err)
	}
	s, err := plugin.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tmpl, err := s.ChatTemplate()
	if err != nil {
		t.Fatal(err)
	}
	got, err := tmpl.Render([]plugin.ChatMessage{{Role: "user", Content: "Hi"}}, true)
	if err != nil || !strings.HasSuffix(got, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n") {
		t.Fatalf("render %q, %v", got, err)
	}
	if ids, err := s.StopTokens(); err != nil || len(ids) != 1 || ids[0] != 2 {
		t.Fatalf("stop tokens %v, %v", ids, err)
	}
}
