package layering

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const module = "github.com/nwc-project/nwc"

// imports lists, for every package of the module, its non-test imports
// inside the module, in the build configuration cgo says.
func imports(t *testing.T, cgo string) map[string][]string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "list", "-e", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, "./...")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED="+cgo)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	m := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		pkg := strings.TrimPrefix(strings.TrimPrefix(f[0], module), "/")
		m[pkg] = nil
		for _, imp := range f[1:] {
			if imp == module || strings.HasPrefix(imp, module+"/") {
				m[pkg] = append(m[pkg], strings.TrimPrefix(strings.TrimPrefix(imp, module), "/"))
			}
		}
	}
	return m
}

func TestNoUpwardImports(t *testing.T) {
	rank := map[string]int{}
	for i, l := range Layers {
		for _, p := range l.Packages {
			if _, dup := rank[p]; dup {
				t.Errorf("%s is in two layers", p)
			}
			rank[p] = i
		}
	}
	for _, cgo := range []string{"1", "0"} {
		for pkg, imps := range imports(t, cgo) {
			r, ok := rank[pkg]
			if !ok {
				t.Errorf("package %s has no layer: add it to Layers (internal/layering) and docs/ARCHITECTURE.md", pkg)
				continue
			}
			for _, imp := range imps {
				ri, ok := rank[imp]
				if ok && ri > r {
					t.Errorf("CGO_ENABLED=%s: %s (layer %q) imports %s (layer %q, above it): imports go downward only (docs/ARCHITECTURE.md)",
						cgo, pkg, Layers[r].Name, imp, Layers[ri].Name)
				}
			}
		}
	}
}
