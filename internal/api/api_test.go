package main

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// api/ is what the code exports: an API change comes with its snapshot
// (make api), and CHANGELOG.md's latest section names the snapshot's hash,
// so it comes with an entry there too.
func TestSnapshot(t *testing.T) {
	root := filepath.Join("..", "..")
	got, err := generate(root)
	if err != nil {
		t.Fatal(err)
	}
	recorded, err := read(root)
	if err != nil {
		t.Fatal(err)
	}
	var changed []string
	for name, text := range got {
		if recorded[name] != text {
			changed = append(changed, "api/"+name)
		}
	}
	for name := range recorded {
		if _, ok := got[name]; !ok {
			changed = append(changed, "api/"+name+" (no such package any more)")
		}
	}
	sort.Strings(changed)
	if len(changed) > 0 {
		t.Fatalf("the exported API is not what api/ records: %s. Run make api, and say what changed in CHANGELOG.md's latest section", strings.Join(changed, ", "))
	}
	if err := changelogNames(root, hash(recorded)); err != nil {
		t.Fatalf("CHANGELOG.md: %v", err)
	}
}

func TestChangelogCheck(t *testing.T) {
	for _, tc := range []struct {
		name, changelog, want string
	}{
		{"named", "# Changelog\n\n## v0.2.0\n\nChanged X.\n\nAPI: abc\n\n## v0.1.0\n\nAPI: old\n", ""},
		{"only in an older section", "# Changelog\n\n## v0.2.0\n\nChanged X.\n\n## v0.1.0\n\nAPI: abc\n", "(## v0.2.0) does not name"},
		{"another hash", "# Changelog\n\n## v0.2.0\n\nAPI: abcd\n", "API: abc"},
		{"no section", "# Changelog\n", "no section"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "CHANGELOG.md"), []byte(tc.changelog), 0o644); err != nil {
				t.Fatal(err)
			}
			err := changelogNames(dir, "abc")
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("changelogNames = %v, want %q", err, tc.want)
			}
		})
	}
}

// A doc comment is no API change; a new exported function is.
func TestSurface(t *testing.T) {
	dir := t.TempDir()
	write := func(src string) string {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, "p.go"), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		s, err := surface(dir, "example.com/p")
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	base := write("package p\n\ntype T struct {\n\tA int\n\tb int\n}\n\nvar ErrX error = nil\n\nfunc F() {}\n\nfunc g() {}\n")
	commented := write("package p\n\n// T is.\ntype T struct {\n\t// A is.\n\tA int // a\n\tb int\n}\n\n// ErrX is.\nvar ErrX error = nil\n\n// F does.\nfunc F() { _ = 1 }\n\nfunc g() {}\n")
	if base != commented {
		t.Errorf("comments and bodies changed the surface:\n%s\nvs\n%s", base, commented)
	}
	if strings.Contains(base, " b int") || strings.Contains(base, "func g") {
		t.Errorf("the surface has unexported identifiers:\n%s", base)
	}
	if added := write("package p\n\ntype T struct {\n\tA int\n}\n\nvar ErrX error = nil\n\nfunc F() {}\n\nfunc H() {}\n"); added == base || !strings.Contains(added, "func H()") {
		t.Errorf("a new exported function did not change the surface:\n%s", added)
	}
}
