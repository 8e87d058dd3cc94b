package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hexmill/hexmill/integration"
)

// The rename on a copy of the repository leaves a tree that builds, vets
// and whose service passes its own tests under its new name.
func TestRenameCopy(t *testing.T) {
	dst := integration.CopyRepo(t)
	if err := rename(dst, "example.com/fleet", "fleet"); err != nil {
		t.Fatal(err)
	}

	for _, check := range []struct{ file, want, not string }{
		{"go.mod", "module example.com/fleet", "github.com/hexmill/hexmill"},
		{"cmd/fleet/service.go", `const name = "fleet"`, `"hexmill"`},
		{"Makefile", "./cmd/fleet", "./cmd/hexmill\n"},
		{"Makefile", "./cmd/hexmill-bench", ""},
		{"docker-compose.yml", "FLEET_CONFIG", "HEXMILL_"},
		{"Dockerfile", "./cmd/fleet", "cmd/hexmill"},
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
	for _, tc := range []struct{ module, name, want string }{
		{"", "fleet", "-module"},
		{"example.com/fleet", "Fleet", "-name"},
		{"example.com/fleet", "", "-name"},
		{"example.com/fleet", "fleet_x", "-name"},
	} {
		if err := rename(t.TempDir(), tc.module, tc.name); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("rename(%q, %q) = %v, want an error naming %s", tc.module, tc.name, err, tc.want)
		}
	}
}
