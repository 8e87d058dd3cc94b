package architecture

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/hexmill/hexmill"

// rules: the packages under each root may depend (directly or
// transitively) on the standard library and on these module packages only.
var rules = []struct {
	root    string
	allowed []string
}{
	{root: "domain", allowed: []string{module + "/domain", module + "/ports"}},
	{root: "ports", allowed: []string{module + "/ports"}},
}

type pkg struct {
	ImportPath string
	Standard   bool
}

// deps lists what the packages under root depend on, as `go list -deps`
// reports it; overlay (a go list -overlay file) may add files.
func deps(t *testing.T, root, overlay string) []pkg {
	t.Helper()
	args := []string{"list", "-e", "-deps", "-json=ImportPath,Standard"}
	if overlay != "" {
		args = append(args, "-overlay", overlay)
	}
	args = append(args, "./"+root+"/...")
	cmd := exec.Command("go", args...)
	cmd.Dir = repoRoot(t)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %s: %v", root, err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatalf("go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// violations returns the dependencies that break the rule for root.
func violations(pkgs []pkg, allowed []string) []string {
	var bad []string
	for _, p := range pkgs {
		if p.Standard {
			continue
		}
		ok := false
		for _, a := range allowed {
			if p.ImportPath == a || strings.HasPrefix(p.ImportPath, a+"/") {
				ok = true
			}
		}
		if !ok {
			bad = append(bad, p.ImportPath)
		}
	}
	return bad
}

func TestDependencyRule(t *testing.T) {
	for _, r := range rules {
		t.Run(r.root, func(t *testing.T) {
			if bad := violations(deps(t, r.root, ""), r.allowed); len(bad) > 0 {
				t.Errorf("%s/ must depend only on the standard library and %v; it depends on:\n  %s",
					r.root, r.allowed, strings.Join(bad, "\n  "))
			}
		})
	}
}

// The rule catches a violation: a domain file importing an adapter (added
// through a go list overlay, so the tree is not touched) is reported, and
// so is what the adapter drags in (watermill).
func TestDependencyRuleCatchesViolations(t *testing.T) {
	cases := []struct {
		name   string
		root   string
		source string
		want   []string
	}{
		{
			name:   "domain imports an adapter",
			root:   "domain",
			source: "package domain\n\nimport _ \"" + module + "/adapters/memory\"\n",
			want:   []string{module + "/adapters/memory", "github.com/ThreeDotsLabs/watermill"},
		},
		{
			name:   "ports imports the domain",
			root:   "ports",
			source: "package ports\n\nimport _ \"" + module + "/domain\"\n",
			want:   []string{module + "/domain"},
		},
		{
			name:   "ports imports watermill",
			root:   "ports",
			source: "package ports\n\nimport _ \"github.com/ThreeDotsLabs/watermill/message\"\n",
			want:   []string{"github.com/ThreeDotsLabs/watermill/message"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			src := filepath.Join(dir, "violation.go")
			if err := os.WriteFile(src, []byte(tc.source), 0o644); err != nil {
				t.Fatal(err)
			}
			target := filepath.Join(repoRoot(t), tc.root, "zz_architecture_violation.go")
			overlay := filepath.Join(dir, "overlay.json")
			b, _ := json.Marshal(map[string]map[string]string{"Replace": {target: src}})
			if err := os.WriteFile(overlay, b, 0o644); err != nil {
				t.Fatal(err)
			}
			var allowed []string
			for _, r := range rules {
				if r.root == tc.root {
					allowed = r.allowed
				}
			}
			bad := violations(deps(t, tc.root, overlay), allowed)
			for _, w := range tc.want {
				if !slices.Contains(bad, w) {
					t.Errorf("violation %s not reported; reported: %v", w, bad)
				}
			}
		})
	}
}

func repoRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		t.Fatalf("go list -m: %v", err)
	}
	return strings.TrimSpace(string(out))
}
