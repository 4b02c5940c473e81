package refmodel

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCacheDir(t *testing.T) {
	t.Setenv("NWC_CACHE", "/some/where")
	if got := CacheDir(); got != "/some/where" {
		t.Fatalf("CacheDir() = %q with NWC_CACHE set", got)
	}
	t.Setenv("NWC_CACHE", "")
	if got := CacheDir(); !strings.HasSuffix(got, filepath.Join(".cache", "nwc")) {
		t.Fatalf("CacheDir() = %q, want ~/.cache/nwc", got)
	}
}

func TestTokenizersLibDir(t *testing.T) {
	t.Setenv("NWC_CACHE", "/c")
	if got, want := TokenizersLibDir(), filepath.Join("/c", "lib"); got != want {
		t.Fatalf("TokenizersLibDir() = %q, want %q", got, want)
	}
}

func TestLookup(t *testing.T) {
	empty := t.TempDir()
	t.Setenv("NWC_CACHE", empty)
	tests := []struct {
		name    string
		format  string
		file    string
		wantErr []string // substrings of the error; nil: no error expected
	}{
		{name: "smollm2-135m", format: "gguf", file: "SmolLM2-135M-Instruct.Q4_1.gguf",
			wantErr: []string{"make setup", "missing"}},
		{name: "minilm-l6", format: "safetensors", file: "model.safetensors",
			wantErr: []string{"make setup"}},
		{name: "gemma3-270m", format: "gguf", file: "gemma-3-270m-q4_k_m.gguf",
			wantErr: []string{"make setup"}},
		{name: "gpt-5", wantErr: []string{`unknown reference model "gpt-5"`, "smollm2-135m", "minilm-l6", "gemma3-270m"}},
		{name: "", wantErr: []string{"unknown reference model", "known:"}},
		{name: "SMOLLM2-135M", wantErr: []string{"unknown"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Lookup(tc.name)
			if tc.format != "" {
				// Known name: the Model comes back even when files are missing.
				if m.Name != tc.name || m.Format != tc.format || filepath.Base(m.File) != tc.file {
					t.Fatalf("Lookup(%q) = %+v", tc.name, m)
				}
				if m.Dir != filepath.Join(empty, "models", tc.name) || filepath.Dir(m.File) != m.Dir {
					t.Fatalf("Lookup(%q): Dir %q File %q not under the cache", tc.name, m.Dir, m.File)
				}
				if m.Package == "" || m.Description == "" {
					t.Fatalf("Lookup(%q): empty Package/Description", tc.name)
				}
			}
			if err == nil {
				t.Fatalf("Lookup(%q) with an empty cache: no error", tc.name)
			}
			for _, s := range tc.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("Lookup(%q) error %q does not mention %q", tc.name, err, s)
				}
			}
		})
	}
}

func TestNames(t *testing.T) {
	got := strings.Join(Names(), ",")
	if got != "smollm2-135m,minilm-l6,gemma3-270m" {
		t.Fatalf("Names() = %s", got)
	}
	n := Names()
	n[0] = "changed"
	if Names()[0] != "smollm2-135m" {
		t.Fatal("Names() exposes internal state")
	}
}

func TestResolve(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("NWC_CACHE", filepath.Join(dir, "cache"))

	// An existing path wins, even when it is also a model name.
	p := filepath.Join(dir, "minilm-l6")
	if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	if got, err := Resolve("minilm-l6"); err != nil || got != "minilm-l6" {
		t.Fatalf("Resolve(existing path) = %q, %v", got, err)
	}
	if got, err := Resolve(p); err != nil || got != p {
		t.Fatalf("Resolve(%q) = %q, %v", p, got, err)
	}

	// A name whose files are missing: error with the hint.
	if _, err := Resolve("smollm2-135m"); err == nil || !strings.Contains(err.Error(), "make setup") {
		t.Fatalf("Resolve(missing model) error = %v", err)
	}
	// Neither a path nor a name.
	_, err := Resolve("no/such/file.gguf")
	if err == nil || !strings.Contains(err.Error(), "no/such/file.gguf") || !strings.Contains(err.Error(), "gemma3-270m") {
		t.Fatalf("Resolve(bogus) error = %v", err)
	}

	// A name whose files exist resolves to the primary file.
	mdir := filepath.Join(dir, "cache", "models", "gemma3-270m")
	if err := os.MkdirAll(mdir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mdir, "gemma-3-270m-q4_k_m.gguf"), []byte("GGUF"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := Resolve("gemma3-270m")
	if err != nil || got != filepath.Join(mdir, "gemma-3-270m-q4_k_m.gguf") {
		t.Fatalf("Resolve(gemma3-270m) = %q, %v", got, err)
	}
}

// With NWC_REQUIRE_MODELS=1 (make test) every reference model must be
// installed in the real cache, with all of its files.
func TestInstalledModels(t *testing.T) {
	require := os.Getenv("NWC_REQUIRE_MODELS") == "1"
	for _, name := range Names() {
		m, err := Lookup(name)
		if err != nil {
			if require {
				t.Errorf("NWC_REQUIRE_MODELS=1: %v", err)
			} else {
				t.Logf("skipping %s: %v", name, err)
			}
			continue
		}
		fi, err := os.Stat(m.File)
		if err != nil || fi.Size() < 1<<20 {
			t.Errorf("%s: primary file %s too small or unreadable (%v)", name, m.File, err)
			continue
		}
		f, err := os.Open(m.File)
		if err != nil {
			t.Fatal(err)
		}
		magic := make([]byte, 4)
		_, err = f.Read(magic)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if m.Format == "gguf" && string(magic) != "GGUF" {
			t.Errorf("%s: %s does not start with GGUF magic (%q)", name, m.File, magic)
		}
	}
}
