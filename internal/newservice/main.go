// Command newservice writes a new service module on this framework: a Go
// module of its own that requires github.com/hexmill/hexmill (with a
// replace to a local checkout until the module is published) and holds
// only the service's files: domain/ with an example handler and its
// tests, cmd/<name>/, deploy/, a Dockerfile, docker-compose.yml, a
// Makefile, .ci/run and a README. Framework files never live there; an
// upgrade is `go get github.com/hexmill/hexmill@<version>`.
//
// `make new-service DIR=../fleet MODULE=example.com/fleet NAME=fleet`
// runs it (docs/fork.md, "A service module of its own").
package main

import (
	"bytes"
	"embed"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"text/template"
)

// framework is the module path a service requires.
const framework = "github.com/hexmill/hexmill"

// files are the new module's files: template/<path>.tmpl, where the path
// segment _name_ becomes the service's name.
//
//go:embed all:template
var files embed.FS

// Options says what to write where.
type Options struct {
	Dir     string // the new module's directory: absent or empty
	Module  string // its module path, e.g. example.com/fleet
	Name    string // the service's name, e.g. fleet
	Replace string // the local framework checkout the module's replace points at; "none": no replace
	Root    string // the framework checkout the generator runs in: its go.mod and CHANGELOG.md
	Version string // the framework version to require; "": the latest in Root's CHANGELOG.md
	Tidy    bool   // run go mod tidy in the new module
}

func main() {
	var o Options
	flag.StringVar(&o.Dir, "dir", "", "the new module's directory (absent or empty), e.g. ../fleet (DIR=)")
	flag.StringVar(&o.Module, "module", "", "the new module's path, e.g. example.com/fleet (MODULE=)")
	flag.StringVar(&o.Name, "name", "", "the service's name: lower case letters, digits and -, e.g. fleet (NAME=)")
	flag.StringVar(&o.Replace, "replace", "", "the framework checkout the module's replace points at (default: this checkout; none: no replace, for a published version) (REPLACE=)")
	flag.StringVar(&o.Root, "root", ".", "the framework checkout this runs in")
	flag.StringVar(&o.Version, "version", "", "the framework version to require (default: the latest in CHANGELOG.md)")
	flag.Parse()
	o.Tidy = true
	if err := Generate(o); err != nil {
		fmt.Fprintln(os.Stderr, "new-service:", err)
		os.Exit(2)
	}
	fmt.Printf("new-service: wrote %s (module %s, service %s); next: cd %s && make test (README.md)\n", o.Dir, o.Module, o.Name, o.Dir)
}

var (
	validName    = regexp.MustCompile(`^[a-z][a-z0-9-]*$`)
	validVersion = regexp.MustCompile(`^v\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$`)
	moduleLine   = regexp.MustCompile(`(?m)^module\s+(\S+)`)
	goLine       = regexp.MustCompile(`(?m)^go\s+\S+$`)
	toolchain    = regexp.MustCompile(`(?m)^toolchain\s+\S+$`)
	requireBlock = regexp.MustCompile(`(?ms)^require \(\n(.*?)^\)`)
	released     = regexp.MustCompile(`(?m)^## \[?(v\d+\.\d+\.\d+[^\]\s]*)`)
)

// Generate checks o and writes the module; on an error it leaves nothing
// behind that it wrote.
func Generate(o Options) error {
	if err := check(&o); err != nil {
		return err
	}
	gomod, err := os.ReadFile(filepath.Join(o.Root, "go.mod"))
	if err != nil {
		return fmt.Errorf("run it at the root of the framework's checkout: %w", err)
	}
	if m := moduleLine.FindSubmatch(gomod); m == nil || string(m[1]) != framework {
		return fmt.Errorf("%s is not the framework's checkout (module %s): run it there (make new-service)", o.Root, framework)
	}
	if o.Version == "" {
		if o.Version, err = latestVersion(o.Root); err != nil {
			return err
		}
	}
	d := data{Options: o, Framework: framework, Prefix: strings.ToUpper(strings.ReplaceAll(o.Name, "-", "_")) + "_"}
	d.GoLine = goLine.Find(gomod) // the framework's floor is the service's
	if d.GoLine == nil {
		return errors.New("the framework's go.mod has no go line")
	}
	d.Toolchain = toolchain.Find(gomod)
	for _, b := range requireBlock.FindAllSubmatch(gomod, -1) {
		d.Requires = append(d.Requires, b[1]...) // tidy drops what the service does not need
	}

	created, err := makeDir(o.Dir)
	if err != nil {
		return err
	}
	if err := write(o.Dir, d); err != nil {
		cleanup(o.Dir, created)
		return err
	}
	if o.Tidy {
		tidy := exec.Command("go", "mod", "tidy")
		tidy.Dir = o.Dir
		if out, err := tidy.CombinedOutput(); err != nil {
			cleanup(o.Dir, created)
			return fmt.Errorf("go mod tidy in the new module: %v\n%s", err, out)
		}
	}
	return nil
}

type data struct {
	Options
	Framework string
	Prefix    string // the environment prefix, FLEET_
	GoLine    []byte
	Toolchain []byte
	Requires  []byte
}

// GoMod is the new module's go.mod before go mod tidy.
func (d data) GoMod() string {
	var b strings.Builder
	fmt.Fprintf(&b, "module %s\n\n%s\n", d.Module, d.GoLine)
	if d.Toolchain != nil {
		fmt.Fprintf(&b, "\n%s\n", d.Toolchain)
	}
	fmt.Fprintf(&b, "\nrequire (\n\t%s %s\n%s)\n", d.Framework, d.Version, d.Requires)
	if d.Replace != "none" {
		fmt.Fprintf(&b, "\n// Until %s is published at %s: the local checkout.\n// Then delete this line and run go mod tidy (README.md, \"Upgrade\").\nreplace %s => %s\n",
			d.Framework, d.Version, d.Framework, d.Replace)
	}
	return b.String()
}

func check(o *Options) error {
	switch {
	case o.Dir == "":
		return errors.New("-dir: give the new module's directory, e.g. DIR=../fleet")
	case o.Name == "":
		return errors.New("-name: give the service's name, e.g. NAME=fleet")
	case !validName.MatchString(o.Name):
		return fmt.Errorf("-name %q: give lower case letters, digits and -, starting with a letter, e.g. NAME=fleet", o.Name)
	case o.Module == "":
		return errors.New("-module: give the new module's path, e.g. MODULE=example.com/fleet")
	}
	if err := checkModule(o.Module); err != nil {
		return fmt.Errorf("-module %q: %v", o.Module, err)
	}
	if inside(o.Root, o.Dir) {
		return fmt.Errorf("-dir %s is inside the framework's checkout: a service module lives in a directory (and repository) of its own, e.g. DIR=../fleet", o.Dir)
	}
	if o.Version != "" && !validVersion.MatchString(o.Version) {
		return fmt.Errorf("-version %q: give a semantic version such as v0.1.0", o.Version)
	}
	if o.Replace == "" {
		o.Replace = o.Root
	}
	if o.Replace != "none" {
		abs, err := filepath.Abs(o.Replace)
		if err != nil {
			return fmt.Errorf("-replace %q: %w", o.Replace, err)
		}
		o.Replace = abs
		b, err := os.ReadFile(filepath.Join(abs, "go.mod"))
		if m := moduleLine.FindSubmatch(b); err != nil || m == nil || string(m[1]) != framework {
			return fmt.Errorf("-replace %q: not a checkout of %s (no go.mod naming it there): give the framework's local path, or none once it is published", o.Replace, framework)
		}
	}
	return nil
}

// checkModule applies Go's rules for a module path a service can be
// fetched by: slash-separated elements of letters, digits and -._~, the
// first a lower-case domain name.
func checkModule(p string) error {
	if p == framework || strings.HasPrefix(p, framework+"/") {
		return fmt.Errorf("that is the framework's path: the service's module needs a path of its own, e.g. example.com/fleet")
	}
	elems := strings.Split(p, "/")
	for _, e := range elems {
		if e == "" || e == "." || e == ".." || strings.HasPrefix(e, ".") || strings.HasSuffix(e, ".") {
			return errors.New("empty, dot or dot-dot element: want a path such as example.com/fleet")
		}
		for _, r := range e {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-._~", r)) {
				return fmt.Errorf("%q is not allowed in a module path: want letters, digits and -._~ between slashes, e.g. example.com/fleet", r)
			}
		}
	}
	if first := elems[0]; !strings.Contains(first, ".") || strings.ToLower(first) != first {
		return fmt.Errorf("its first element %q is not a lower-case domain name: want a path such as example.com/fleet or github.com/you/fleet", first)
	}
	return nil
}

// inside says whether dir is root or under it.
func inside(root, dir string) bool {
	r, err1 := filepath.Abs(root)
	d, err2 := filepath.Abs(dir)
	if err1 != nil || err2 != nil {
		return false
	}
	rel, err := filepath.Rel(r, d)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

func latestVersion(root string) (string, error) {
	b, err := os.ReadFile(filepath.Join(root, "CHANGELOG.md"))
	if err != nil {
		return "", fmt.Errorf("the framework version to require: %w (or give -version)", err)
	}
	m := released.FindSubmatch(b)
	if m == nil {
		return "", errors.New("the framework version to require: CHANGELOG.md names none (## v0.1.0): give -version")
	}
	return string(m[1]), nil
}

// makeDir makes dir, or accepts it empty; created says whether it made it.
func makeDir(dir string) (created bool, err error) {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return false, fmt.Errorf("-dir: %w", err)
		}
		return true, nil
	case err != nil:
		return false, fmt.Errorf("-dir %s: %w (give a new or empty directory)", dir, err)
	case len(entries) > 0:
		return false, fmt.Errorf("-dir %s is not empty (it has %s): give a new or empty directory; the generator overwrites nothing", dir, entries[0].Name())
	}
	return false, nil
}

// cleanup removes what Generate wrote: dir if it made it, else its
// contents (it was empty).
func cleanup(dir string, created bool) {
	if created {
		_ = os.RemoveAll(dir)
		return
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		_ = os.RemoveAll(filepath.Join(dir, e.Name()))
	}
}

func write(dir string, d data) error {
	return fs.WalkDir(files, "template", func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		src, err := files.ReadFile(p)
		if err != nil {
			return err
		}
		t, err := template.New(p).Option("missingkey=error").Parse(string(src))
		if err != nil {
			return fmt.Errorf("template %s: %w", p, err)
		}
		var out bytes.Buffer
		if err := t.Execute(&out, d); err != nil {
			return fmt.Errorf("template %s: %w", p, err)
		}
		rel := strings.TrimSuffix(strings.TrimPrefix(p, "template/"), ".tmpl")
		rel = strings.ReplaceAll(rel, "_name_", d.Name)
		dst := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		mode := fs.FileMode(0o644)
		if path.Dir(rel) == ".ci" {
			mode = 0o755
		}
		return os.WriteFile(dst, out.Bytes(), mode)
	})
}
