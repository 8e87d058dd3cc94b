// Command api records the exported API of the packages a service imports
// in api/<package>.txt (the go/doc surface: declarations without bodies
// nor comments, in go/doc's order), and prints its hash, which
// CHANGELOG.md's latest section names. `make api` runs it; its test fails
// when api/ is not what the code exports, or when CHANGELOG.md's latest
// section does not name api/'s hash (docs/fork.md, CHANGELOG.md).
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"go/ast"
	"go/doc"
	"go/parser"
	"go/printer"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// module is the framework's module path.
const module = "github.com/hexmill/hexmill"

// packages are what a service imports: its wiring and tests (app, its
// sections and harness, integration), what its handlers see (ports), and
// what a transport of its own or a configuration names (the adapters).
var packages = []string{
	"adapters/aliyun",
	"adapters/memory",
	"adapters/mqtt",
	"adapters/postgres",
	"adapters/rabbitmq",
	"adapters/transport",
	"app",
	"app/apptest",
	"app/config",
	"app/runtime",
	"integration",
	"ports",
}

func main() {
	root := flag.String("dir", ".", "the root of the checkout")
	flag.Parse()
	if err := write(*root); err != nil {
		fmt.Fprintln(os.Stderr, "api:", err)
		os.Exit(1)
	}
}

// write regenerates api/ under root and says what CHANGELOG.md must name.
func write(root string) error {
	snap, err := generate(root)
	if err != nil {
		return err
	}
	dir := filepath.Join(root, "api")
	old, _ := filepath.Glob(filepath.Join(dir, "*.txt"))
	for _, f := range old {
		if _, ok := snap[filepath.Base(f)]; !ok {
			if err := os.Remove(f); err != nil {
				return err
			}
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, text := range snap {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			return err
		}
	}
	sum := hash(snap)
	fmt.Printf("api/: %d packages, hash %s\n", len(snap), sum)
	if err := changelogNames(root, sum); err != nil {
		fmt.Printf("CHANGELOG.md: %v\n", err)
	}
	return nil
}

// fileName is the snapshot's file of a package: api/app_config.txt for
// app/config.
func fileName(pkg string) string { return strings.ReplaceAll(pkg, "/", "_") + ".txt" }

// generate returns the snapshot: file name -> the package's surface.
func generate(root string) (map[string]string, error) {
	snap := map[string]string{}
	for _, pkg := range packages {
		text, err := surface(filepath.Join(root, filepath.FromSlash(pkg)), module+"/"+pkg)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", pkg, err)
		}
		snap[fileName(pkg)] = text
	}
	return snap, nil
}

// hash is the snapshot's hash: sha256 over its files in name order, the
// first 12 hex digits.
func hash(snap map[string]string) string {
	names := make([]string, 0, len(snap))
	for n := range snap {
		names = append(names, n)
	}
	sort.Strings(names)
	h := sha256.New()
	for _, n := range names {
		fmt.Fprintf(h, "%s\n%s", n, snap[n])
	}
	return hex.EncodeToString(h.Sum(nil))[:12]
}

// read returns the snapshot recorded under root/api.
func read(root string) (map[string]string, error) {
	files, err := filepath.Glob(filepath.Join(root, "api", "*.txt"))
	if err != nil {
		return nil, err
	}
	snap := map[string]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		snap[filepath.Base(f)] = string(b)
	}
	return snap, nil
}

// latest is CHANGELOG.md's first "## " section, heading included.
var latest = regexp.MustCompile(`(?ms)^## .*?(?:\z|^## )`)

// changelogNames checks that CHANGELOG.md's latest section has the line
// "API: <sum>".
func changelogNames(root, sum string) error {
	b, err := os.ReadFile(filepath.Join(root, "CHANGELOG.md"))
	if err != nil {
		return err
	}
	section := latest.Find(b)
	if section == nil {
		return errors.New("no section (## <version>)")
	}
	heading, _, _ := bytes.Cut(section, []byte("\n"))
	if !regexp.MustCompile(`(?m)^API: ` + sum + `$`).Match(section) {
		return fmt.Errorf("its latest section (%s) does not name the API's hash: say there what changed in the API, and end it with the line `API: %s` (replacing an older API: line of that section)", heading, sum)
	}
	return nil
}

// surface prints the exported API of the package in dir: its constants,
// variables, functions, types with their fields, functions and methods,
// without bodies, comments or unexported identifiers.
func surface(dir, importPath string) (string, error) {
	fset := token.NewFileSet()
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	var files []*ast.File
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() || !strings.HasSuffix(n, ".go") || strings.HasSuffix(n, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, n), nil, parser.ParseComments)
		if err != nil {
			return "", err
		}
		if f.Name.Name == "main" {
			continue
		}
		files = append(files, f)
	}
	if len(files) == 0 {
		return "", fs.ErrNotExist
	}
	p, err := doc.NewFromFiles(fset, files, importPath)
	if err != nil {
		return "", err
	}
	var out bytes.Buffer
	fmt.Fprintf(&out, "package %s // import %q\n", p.Name, importPath)
	print := func(indent string, node ast.Node) {
		var b bytes.Buffer
		if err == nil {
			err = (&printer.Config{Mode: printer.UseSpaces | printer.TabIndent, Tabwidth: 8}).Fprint(&b, fset, node)
		}
		// One space between words, no blank lines: the alignment gofmt
		// gives fields depends on their comments, which are no API.
		for _, l := range strings.Split(b.String(), "\n") {
			lead := l[:len(l)-len(strings.TrimLeft(l, "\t"))]
			if l = strings.Join(strings.Fields(l), " "); l != "" {
				out.WriteString(indent + lead + l + "\n")
			}
		}
	}
	values := func(indent string, vs []*doc.Value) {
		for _, v := range vs {
			print(indent, bare(v.Decl))
		}
	}
	funcs := func(indent string, fs []*doc.Func) {
		for _, f := range fs {
			d := *f.Decl
			d.Doc, d.Body = nil, nil
			print(indent, &d)
		}
	}
	out.WriteString("\n")
	values("", p.Consts)
	values("", p.Vars)
	funcs("", p.Funcs)
	for _, t := range p.Types {
		print("", bare(t.Decl))
		values("    ", t.Consts)
		values("    ", t.Vars)
		funcs("    ", t.Funcs)
		funcs("    ", t.Methods)
	}
	return out.String(), err
}

// bare is a declaration without its comments, and its variables without
// their initial values where they have a type (a changed error message is
// no API change).
func bare(d *ast.GenDecl) *ast.GenDecl {
	c := *d
	c.Doc = nil
	c.Specs = nil
	for _, s := range d.Specs {
		switch s := s.(type) {
		case *ast.ValueSpec:
			v := *s
			v.Doc, v.Comment = nil, nil
			if d.Tok == token.VAR && v.Type != nil {
				v.Values = nil
			}
			c.Specs = append(c.Specs, &v)
		case *ast.TypeSpec:
			ts := *s
			ts.Doc, ts.Comment = nil, nil
			ts.Type = stripFields(ts.Type)
			c.Specs = append(c.Specs, &ts)
		default:
			c.Specs = append(c.Specs, s)
		}
	}
	return &c
}

// stripFields drops the comments of a struct's or interface's fields.
func stripFields(e ast.Expr) ast.Expr {
	var fl **ast.FieldList
	switch t := e.(type) {
	case *ast.StructType:
		c := *t
		fl, e = &c.Fields, &c
	case *ast.InterfaceType:
		c := *t
		fl, e = &c.Methods, &c
	default:
		return e
	}
	if *fl == nil {
		return e
	}
	list := **fl
	list.List = nil
	for _, f := range (*fl).List {
		g := *f
		g.Doc, g.Comment = nil, nil
		list.List = append(list.List, &g)
	}
	*fl = &list
	return e
}
