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
// transitively) on the standard library and on these module packages only;
// with thirdParty, on packages of other modules too. They are the floors,
// each importing only those below it: ports <- the adapter contract
// (adapters/transport) <- each adapter <- app (app/config <- app/runtime
// <- app) <- a service (domain/ and its cmd/, which see ports only).
var rules = []struct {
	root       string
	allowed    []string
	thirdParty bool
}{
	{root: "domain", allowed: []string{module + "/domain", module + "/ports"}},
	{root: "ports", allowed: []string{module + "/ports"}},
	{root: "adapters/transport", allowed: []string{module + "/ports", module + "/adapters/transport"}, thirdParty: true},
	{root: "adapters/memory", allowed: adapter("memory"), thirdParty: true},
	{root: "adapters/mqtt", allowed: adapter("mqtt"), thirdParty: true},
	{root: "adapters/rabbitmq", allowed: adapter("rabbitmq"), thirdParty: true},
	{root: "adapters/aliyun", allowed: adapter("aliyun"), thirdParty: true},
	{root: "adapters/postgres", allowed: adapter("postgres"), thirdParty: true},
	// app's rooms: the configuration knows the contract and the
	// PostgreSQL section, the runtime the configuration too; neither
	// knows a transport adapter, fx wiring or app (which imports them).
	{root: "app/config", allowed: []string{module + "/ports", module + "/adapters/transport", module + "/adapters/postgres", module + "/app/config"}, thirdParty: true},
	{root: "app/runtime", allowed: []string{module + "/ports", module + "/adapters/transport", module + "/adapters/postgres", module + "/app/config", module + "/app/runtime"}, thirdParty: true},
	{root: "app", allowed: []string{module + "/ports", module + "/adapters", module + "/app"}, thirdParty: true},
}

// adapter is what the adapter name may import: ports, the contract and
// itself; never app, another adapter or the tooling.
func adapter(name string) []string {
	return []string{module + "/ports", module + "/adapters/transport", module + "/adapters/" + name}
}

// The ownership line: a service (a fork) owns domain/ and its wiring in
// cmd/<service>/; the framework, what a fork takes upgrades of, never
// imports them, directly or transitively. (A main package cannot be
// imported, so the wiring is safe by construction; domain/ is not.)
var (
	framework = []string{"ports", "adapters", "app", "integration", "internal"}
	forkOwned = []string{module + "/domain", module + "/cmd"}
)

type pkg struct {
	ImportPath string
	Standard   bool
}

// deps lists what the packages under root depend on, as `go list -deps`
// reports it, with their tests' dependencies when tests is set; overlay (a
// go list -overlay file) may add files.
func deps(t *testing.T, root, overlay string, tests bool) []pkg {
	t.Helper()
	args := []string{"list", "-e", "-deps", "-json=ImportPath,Standard"}
	if tests {
		args = append(args, "-test")
	}
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
func violations(pkgs []pkg, allowed []string, thirdParty bool) []string {
	var bad []string
	for _, p := range pkgs {
		if p.Standard || thirdParty && p.ImportPath != module && !strings.HasPrefix(p.ImportPath, module+"/") {
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
			if bad := violations(deps(t, r.root, "", false), r.allowed, r.thirdParty); len(bad) > 0 {
				t.Errorf("%s/ must depend only on the standard library and %v; it depends on:\n  %s",
					r.root, r.allowed, strings.Join(bad, "\n  "))
			}
		})
	}
}

func TestFrameworkDoesNotImportTheService(t *testing.T) {
	for _, root := range framework {
		t.Run(root, func(t *testing.T) {
			if bad := forkImports(deps(t, root, "", true)); len(bad) > 0 {
				t.Errorf("%s/ is the framework's and must not depend on what a service owns (%v); it depends on:\n  %s",
					root, forkOwned, strings.Join(bad, "\n  "))
			}
		})
	}
}

// forkImports returns the dependencies that a service owns.
func forkImports(pkgs []pkg) []string {
	var bad []string
	for _, p := range pkgs {
		for _, f := range forkOwned {
			if p.ImportPath == f || strings.HasPrefix(p.ImportPath, f+"/") {
				bad = append(bad, p.ImportPath)
			}
		}
	}
	return bad
}

// The ownership rule catches a framework package importing the domain, in
// its code or in its tests.
func TestFrameworkRuleCatchesViolations(t *testing.T) {
	cases := []struct {
		name, root, file, source string
	}{
		{"app imports the domain", "app", "zz_violation.go", "package app\n\nimport _ \"" + module + "/domain\"\n"},
		{"an adapter imports the domain", "adapters/aliyun", "zz_violation.go", "package aliyun\n\nimport _ \"" + module + "/domain\"\n"},
		{"an app test imports the domain", "app", "zz_violation_test.go", "package app_test\n\nimport _ \"" + module + "/domain\"\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			overlay := writeOverlay(t, tc.root, tc.file, tc.source)
			bad := forkImports(deps(t, tc.root, overlay, true))
			if !slices.Contains(bad, module+"/domain") {
				t.Errorf("%s importing the domain is not reported; reported: %v", tc.root, bad)
			}
		})
	}
}

// writeOverlay writes a go list overlay that adds file with source to the
// package at dir.
func writeOverlay(t *testing.T, dir, file, source string) string {
	t.Helper()
	tmp := t.TempDir()
	src := filepath.Join(tmp, "violation.go")
	if err := os.WriteFile(src, []byte(source), 0o644); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(repoRoot(t), dir, file)
	overlay := filepath.Join(tmp, "overlay.json")
	b, _ := json.Marshal(map[string]map[string]string{"Replace": {target: src}})
	if err := os.WriteFile(overlay, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return overlay
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
		{
			name:   "an adapter imports app",
			root:   "adapters/mqtt",
			source: "package mqtt\n\nimport _ \"" + module + "/app\"\n",
			want:   []string{module + "/app"},
		},
		{
			name:   "an adapter imports another",
			root:   "adapters/rabbitmq",
			source: "package rabbitmq\n\nimport _ \"" + module + "/adapters/memory\"\n",
			want:   []string{module + "/adapters/memory"},
		},
		{
			name:   "the contract imports an adapter",
			root:   "adapters/transport",
			source: "package transport\n\nimport _ \"" + module + "/adapters/memory\"\n",
			want:   []string{module + "/adapters/memory"},
		},
		{
			name:   "the configuration imports a transport adapter",
			root:   "app/config",
			source: "package config\n\nimport _ \"" + module + "/adapters/memory\"\n",
			want:   []string{module + "/adapters/memory"},
		},
		{
			name:   "the runtime imports a transport adapter",
			root:   "app/runtime",
			source: "package runtime\n\nimport _ \"" + module + "/adapters/mqtt\"\n",
			want:   []string{module + "/adapters/mqtt"},
		},
		{
			name:   "app imports the tooling",
			root:   "app",
			source: "package app\n\nimport _ \"" + module + "/integration\"\n",
			want:   []string{module + "/integration"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			overlay := writeOverlay(t, tc.root, "zz_architecture_violation.go", tc.source)
			var allowed []string
			var thirdParty bool
			for _, r := range rules {
				if r.root == tc.root {
					allowed, thirdParty = r.allowed, r.thirdParty
				}
			}
			bad := violations(deps(t, tc.root, overlay, false), allowed, thirdParty)
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
