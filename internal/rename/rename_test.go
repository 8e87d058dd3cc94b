package main

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hexmill/hexmill/integration"
)

// The rename on a copy of the repository leaves a tree that builds, vets
// and whose service passes its own tests under its new name, and changes
// no framework file: every file it changes is the service's.
func TestRenameCopy(t *testing.T) {
	dst := integration.CopyRepo(t)
	before := snapshot(t, dst)
	if err := rename(dst, "fleet"); err != nil {
		t.Fatal(err)
	}
	after := snapshot(t, dst)
	for f, b := range before {
		if a, ok := after[f]; (!ok || a != b) && !serviceFile(f) {
			t.Errorf("rename changed the framework's %s", f)
		}
	}
	for f := range after {
		if _, ok := before[f]; !ok && !serviceFile(f) {
			t.Errorf("rename made the framework file %s", f)
		}
	}

	for _, check := range []struct{ file, want, not string }{
		{"go.mod", "module github.com/hexmill/hexmill", "fleet"},
		{"cmd/fleet/service.go", `const name = "fleet"`, `"hexmill"`},
		{"cmd/fleet/service.go", `"github.com/hexmill/hexmill/app"`, ""},
		{"docker-compose.yml", "FLEET_CONFIG", "HEXMILL_"},
		{"docker-compose.yml", "  fleet:", "  hexmill:"},
		{"Dockerfile", "./cmd/fleet", "cmd/hexmill"},
		{"deploy/fleet.compose.yaml", "group: fleet", "group: hexmill"},
	} {
		b, err := os.ReadFile(filepath.Join(dst, check.file))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), check.want) {
			t.Errorf("%s does not contain %q after the rename", check.file, check.want)
		}
		if check.not != "" && strings.Contains(string(b), check.not) {
			t.Errorf("%s still contains %q after the rename", check.file, check.not)
		}
	}
	if _, err := os.Stat(filepath.Join(dst, "cmd", "hexmill")); err == nil {
		t.Error("cmd/hexmill is still there")
	}

	// The Makefile (the framework's) finds the service by its
	// cmd/<name>/service.go.
	out, err := exec.Command("make", "-C", dst, "-s", "--no-print-directory", "print-service").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "fleet" {
		t.Errorf("make print-service in the renamed copy: %v, %q; want fleet", err, out)
	}

	steps := [][]string{{"go", "build", "./..."}, {"go", "vet", "./..."}}
	if !testing.Short() {
		// The service's own tests, under its new name (the binary, its
		// variables, its metrics).
		steps = append(steps, []string{"go", "test", "-race", "-count=1", "./cmd/fleet/", "./domain/"})
	}
	for _, step := range steps {
		cmd := exec.Command(step[0], step[1:]...)
		cmd.Dir = dst
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s in the renamed copy: %v\n%s", strings.Join(step, " "), err, out)
		}
	}
}

func TestRenameRefusesBadArguments(t *testing.T) {
	for _, tc := range []struct{ name, want string }{
		{"Fleet", "-name"},
		{"", "-name"},
		{"fleet_x", "-name"},
		{"fleet", "root of the clone"},
	} {
		if err := rename(t.TempDir(), tc.name); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("rename(%q) = %v, want an error naming %s", tc.name, err, tc.want)
		}
	}
}

// serviceFile says whether a path (slash-separated, from the root) is the
// service's, which rename may change.
func serviceFile(f string) bool {
	return strings.HasPrefix(f, "cmd/") || strings.HasPrefix(f, "deploy/") || f == "docker-compose.yml" || f == "Dockerfile"
}

// snapshot reads every file under root, by slash-separated path.
func snapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	files := map[string]string{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		files[filepath.ToSlash(rel)] = string(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}
