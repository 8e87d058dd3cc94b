package integration_test

import (
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// supplyChainRoot is the module's root directory.
func supplyChainRoot(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

// The service as docker-compose.yml runs it is hardened: read-only root
// filesystem, no capabilities, no privilege escalation (docs/security.md).
func TestComposeHardensTheService(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(supplyChainRoot(t), "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Services map[string]struct {
			ReadOnly    bool     `yaml:"read_only"`
			CapDrop     []string `yaml:"cap_drop"`
			SecurityOpt []string `yaml:"security_opt"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	s, ok := doc.Services["hexmill"]
	if !ok {
		t.Fatal("no hexmill service in docker-compose.yml")
	}
	if !s.ReadOnly || !slices.Contains(s.CapDrop, "ALL") || !slices.Contains(s.SecurityOpt, "no-new-privileges:true") {
		t.Errorf("hexmill service: read_only %t, cap_drop %v, security_opt %v; want true, [ALL], [no-new-privileges:true]", s.ReadOnly, s.CapDrop, s.SecurityOpt)
	}
}

// The build context leaves out secrets and local configuration, and both
// modules name a toolchain floor.
func TestBuildContextAndToolchain(t *testing.T) {
	root := supplyChainRoot(t)
	b, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	ignored := strings.Fields(string(b))
	for _, p := range []string{"**/*.pem", "**/*.key", "**/.env", "**/.env.*", "**/config*.local.yaml", "bin", ".git"} {
		if !slices.Contains(ignored, p) {
			t.Errorf(".dockerignore does not leave out %s", p)
		}
	}
	for _, mod := range []string{"go.mod", "tools/go.mod"} {
		b, err := os.ReadFile(filepath.Join(root, mod))
		if err != nil {
			t.Fatal(err)
		}
		var toolchain string
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "toolchain "); ok {
				toolchain = strings.TrimSpace(v)
			}
		}
		if !strings.HasPrefix(toolchain, "go1.") {
			t.Errorf("%s names no toolchain floor (toolchain go1.N.M)", mod)
		}
	}
}
