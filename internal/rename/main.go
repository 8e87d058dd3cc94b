// Command rename gives a fork of hexmill its service's name, in the
// service's own files only: cmd/<name>/ (its directory and contents),
// deploy/, docker-compose.yml and the Dockerfile. There it replaces the
// environment prefix (HEXMILL_ -> FLEET_), the metric namespace (hexmill_
// -> fleet_) and the name itself (client IDs, connection names, compose
// service names, the binary).
//
// It never touches a framework file, and it leaves the module path
// github.com/hexmill/hexmill as it is: a fork that edits no framework file
// merges upstream without conflicts (docs/fork.md, internal/upgradetest).
// `make rename NAME=fleet` runs it.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

func main() {
	name := flag.String("name", "", "the new service name, e.g. fleet: lower case letters, digits and -")
	dir := flag.String("dir", ".", "the root of the clone")
	flag.Parse()
	if err := rename(*dir, *name); err != nil {
		fmt.Fprintln(os.Stderr, "rename:", err)
		os.Exit(2)
	}
}

var (
	validName  = regexp.MustCompile(`^[a-z][a-z0-9-]*$`)
	moduleLine = regexp.MustCompile(`(?m)^module\s+(\S+)`)
)

// nameConst is where rename finds the current service name: const name in
// cmd/<name>/service.go.
var nameConst = regexp.MustCompile(`(?m)^const name = "([^"]+)"`)

// serviceFiles are the service's files outside cmd/<name>/, relative to the
// root (directories walked). Everything else is the framework's.
var serviceFiles = []string{"deploy", "docker-compose.yml", "Dockerfile"}

func rename(root, name string) error {
	if !validName.MatchString(name) {
		return fmt.Errorf("-name %q: give lower case letters, digits and -, starting with a letter, e.g. fleet (NAME=...)", name)
	}
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		return fmt.Errorf("run it at the root of the clone: %w", err)
	}
	m := moduleLine.FindSubmatch(gomod)
	if m == nil {
		return errors.New("go.mod has no module line")
	}
	oldName, err := findName(root)
	if err != nil {
		return err
	}
	if oldName == name {
		return nil
	}

	oldCmd, newCmd := filepath.Join(root, "cmd", oldName), filepath.Join(root, "cmd", name)
	if _, err := os.Stat(newCmd); err == nil {
		return fmt.Errorf("cmd/%s exists already", name)
	}
	if err := os.Rename(oldCmd, newCmd); err != nil {
		return fmt.Errorf("rename cmd/%s: %w", oldName, err)
	}
	oldDeploy := filepath.Join(root, "deploy", oldName+".compose.yaml")
	if _, err := os.Stat(oldDeploy); err == nil {
		if err := os.Rename(oldDeploy, filepath.Join(root, "deploy", name+".compose.yaml")); err != nil {
			return fmt.Errorf("rename %s: %w", oldDeploy, err)
		}
	}
	change := names(strings.Trim(string(m[1]), `"`), oldName, name)
	for _, top := range append([]string{filepath.Join("cmd", name)}, serviceFiles...) {
		err := filepath.WalkDir(filepath.Join(root, top), func(path string, d fs.DirEntry, err error) error {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // deleted by the fork
			}
			if err != nil || d.IsDir() || !textFile(path) {
				return err
			}
			return edit(path, change)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// names replaces the old service name by the new one: the environment
// prefix, the metric namespace, and the name as a word (not where it
// starts a longer name, such as the framework's hexmill-bench). The module
// path (github.com/hexmill/hexmill in import paths) stays as it is.
func names(module, oldName, name string) func([]byte) []byte {
	upper := func(s string) string { return strings.ToUpper(strings.ReplaceAll(s, "-", "_")) }
	metric := func(s string) string { return strings.ReplaceAll(s, "-", "_") }
	word := regexp.MustCompile(`\b` + regexp.QuoteMeta(oldName) + `\b([^-\w]|$)`)
	const keep = "\x00module\x00"
	return func(b []byte) []byte {
		b = bytes.ReplaceAll(b, []byte(module), []byte(keep))
		b = bytes.ReplaceAll(b, []byte(upper(oldName)+"_"), []byte(upper(name)+"_"))
		b = bytes.ReplaceAll(b, []byte(metric(oldName)+"_"), []byte(metric(name)+"_"))
		b = word.ReplaceAll(b, []byte(name+"${1}"))
		return bytes.ReplaceAll(b, []byte(keep), []byte(module))
	}
}

func findName(root string) (string, error) {
	matches, _ := filepath.Glob(filepath.Join(root, "cmd", "*", "service.go"))
	for _, m := range matches {
		b, err := os.ReadFile(m)
		if err != nil {
			return "", err
		}
		if sm := nameConst.FindSubmatch(b); sm != nil && filepath.Base(filepath.Dir(m)) == string(sm[1]) {
			return string(sm[1]), nil
		}
	}
	return "", errors.New("no cmd/<name>/service.go with const name = \"<name>\": the service's wiring is where rename finds its name")
}

func textFile(path string) bool {
	switch filepath.Ext(path) {
	case ".go", ".md", ".yaml", ".yml", ".conf", ".sh", ".txt", ".sql":
		return true
	}
	switch filepath.Base(path) {
	case "Dockerfile", "enabled_plugins":
		return true
	}
	return false
}

func edit(path string, change func([]byte) []byte) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	out := change(b)
	if bytes.Equal(out, b) {
		return nil
	}
	info, err := os.Stat(path)
	if err != nil {
		return err
	}
	return os.WriteFile(path, out, info.Mode().Perm())
}
