// Command rename turns a clone of hexmill into a service of its own: it
// rewrites the module path everywhere, and the service's name in the
// service's own files (cmd/<name>/, deploy/, docker-compose.yml,
// Dockerfile, the Makefile's paths): its directory, its environment
// prefix (HEXMILL_ -> FLEET_), its metric namespace (hexmill_ -> fleet_)
// and the name itself. The framework keeps its name, which it uses only in
// package paths. `make rename MODULE=example.com/fleet NAME=fleet` runs it.
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
	module := flag.String("module", "", "the new module path, e.g. example.com/fleet")
	name := flag.String("name", "", "the new service name, e.g. fleet: lower case letters, digits and -")
	dir := flag.String("dir", ".", "the root of the clone")
	flag.Parse()
	if err := rename(*dir, *module, *name); err != nil {
		fmt.Fprintln(os.Stderr, "rename:", err)
		os.Exit(2)
	}
}

var (
	validName  = regexp.MustCompile(`^[a-z][a-z0-9-]*$`)
	moduleLine = regexp.MustCompile(`(?m)^module\s+(\S+)`)
)

// serviceName finds the current service name: const name in
// cmd/*/service.go.
var nameConst = regexp.MustCompile(`(?m)^const name = "([^"]+)"`)

func rename(root, module, name string) error {
	if module == "" || strings.ContainsAny(module, " \t\"") {
		return errors.New("-module: give the new module path, e.g. example.com/fleet (MODULE=...)")
	}
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
	oldModule := strings.Trim(string(m[1]), `"`)
	oldName, err := findName(root)
	if err != nil {
		return err
	}

	// The module path, in every text file.
	if err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); path != root && (strings.HasPrefix(n, ".") && n != ".ci" || n == "bin" || n == "vendor") {
				return filepath.SkipDir
			}
			return nil
		}
		if !textFile(path) {
			return nil
		}
		return edit(path, func(b []byte) []byte { return bytes.ReplaceAll(b, []byte(oldModule), []byte(module)) })
	}); err != nil {
		return err
	}
	if oldName == name {
		return nil
	}

	// The service's name, in the service's files.
	oldCmd, newCmd := filepath.Join(root, "cmd", oldName), filepath.Join(root, "cmd", name)
	if _, err := os.Stat(newCmd); err == nil {
		return fmt.Errorf("cmd/%s exists already", name)
	}
	if err := os.Rename(oldCmd, newCmd); err != nil {
		return err
	}
	oldDeploy := filepath.Join(root, "deploy", oldName+".compose.yaml")
	if _, err := os.Stat(oldDeploy); err == nil {
		if err := os.Rename(oldDeploy, filepath.Join(root, "deploy", name+".compose.yaml")); err != nil {
			return err
		}
	}
	service := names(oldName, name)
	var files []string
	_ = filepath.WalkDir(newCmd, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && textFile(path) {
			files = append(files, path)
		}
		return nil
	})
	_ = filepath.WalkDir(filepath.Join(root, "deploy"), func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && textFile(path) {
			files = append(files, path)
		}
		return nil
	})
	files = append(files, filepath.Join(root, "docker-compose.yml"), filepath.Join(root, "Dockerfile"))
	for _, f := range files {
		if _, err := os.Stat(f); err != nil {
			continue
		}
		if err := edit(f, service); err != nil {
			return err
		}
	}
	// The Makefile builds, runs and deploys the service by its paths.
	paths := regexp.MustCompile(`\b(cmd|bin|deploy)/` + regexp.QuoteMeta(oldName) + `\b([^-\w]|$)`)
	return edit(filepath.Join(root, "Makefile"), func(b []byte) []byte {
		return paths.ReplaceAll(b, []byte("${1}/"+name+"${2}"))
	})
}

// names replaces the old service name by the new one: the environment
// prefix, the metric namespace, and the name as a word (not where it
// starts a longer name, such as the framework's hexmill-bench).
func names(oldName, name string) func([]byte) []byte {
	upper := func(s string) string { return strings.ToUpper(strings.ReplaceAll(s, "-", "_")) }
	metric := func(s string) string { return strings.ReplaceAll(s, "-", "_") }
	word := regexp.MustCompile(`\b` + regexp.QuoteMeta(oldName) + `\b([^-\w]|$)`)
	return func(b []byte) []byte {
		b = bytes.ReplaceAll(b, []byte(upper(oldName)+"_"), []byte(upper(name)+"_"))
		b = bytes.ReplaceAll(b, []byte(metric(oldName)+"_"), []byte(metric(name)+"_"))
		return word.ReplaceAll(b, []byte(name+"${1}"))
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
	case ".go", ".mod", ".md", ".yaml", ".yml", ".conf", ".sh", ".txt":
		return true
	}
	switch filepath.Base(path) {
	case "Makefile", "Dockerfile", "run", "enabled_plugins":
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
