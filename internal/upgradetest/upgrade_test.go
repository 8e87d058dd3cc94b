package upgradetest

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// back is how far back on HEAD's first-parent line the fork is made.
const back = 30

// yours is what a fork owns (docs/fork.md, the Makefile's YOURS): the only
// paths where an upstream merge may conflict.
var yours = []string{"domain/", "cmd/", "deploy/", "docker-compose.yml", "Dockerfile"}

func own(path string) bool {
	for _, y := range yours {
		if path == y || strings.HasSuffix(y, "/") && strings.HasPrefix(path, y) {
			return true
		}
	}
	return false
}

// The fork is made 30 commits back on HEAD's first-parent line, or, where
// fewer commits have today's ownership line, at the oldest one that has
// it: the fork point must have ports/, adapters/transport/, app/, domain/
// and cmd/ holding nothing but the service's cmd/<name>/service.go (before
// that, the framework's tools lived in cmd/ too, and the fork's files were
// not what docs/fork.md says today). It then merges HEAD.
func TestUpgradeMergesRealHistory(t *testing.T) {
	t.Parallel()
	root := checkout(t)
	head := git(t, root, "rev-parse", "HEAD")
	line := strings.Fields(git(t, root, "rev-list", "--first-parent", "--max-count="+strconv.Itoa(back+1), head))
	if len(line) < back+1 && git(t, root, "rev-parse", "--is-shallow-repository") == "true" {
		t.Skipf("this checkout is shallow (%d commits of HEAD's line): the test replays %d commits of history; run git fetch --unshallow (as .ci/run does)", len(line), back)
	}
	point := ""
	for i := len(line) - 1; i >= 1; i-- {
		if layout(t, root, line[i]) {
			point = line[i]
			t.Logf("fork point: %d commits back on HEAD's first-parent line, %s", i, git(t, root, "log", "-1", "--format=%h %s", line[i]))
			break
		}
	}
	if point == "" {
		t.Skip("no commit before HEAD on its first-parent line has today's layout: nothing to merge yet")
	}

	fork := makeFork(t, root, point)
	conflicts := upgrade(t, fork, head)
	t.Logf("conflicts, all in the fork's own files: %v", conflicts)

	// The framework is upstream's, byte for byte.
	exclude := []string{"diff", "--stat", head, "HEAD", "--", "."}
	for _, y := range yours {
		exclude = append(exclude, ":!"+strings.TrimSuffix(y, "/"))
	}
	if diff := git(t, fork, exclude...); diff != "" {
		t.Errorf("after the upgrade the fork's framework differs from upstream's:\n%s", diff)
	}
	checkFork(t, fork)
}

// Upstream commits of the kinds that broke forks with a rewritten module
// path: an import added to a framework file, and a new framework file
// importing ports. The merge is clean, and the fork builds.
func TestUpgradeMergesFrameworkChanges(t *testing.T) {
	t.Parallel()
	root := checkout(t)
	head := git(t, root, "rev-parse", "HEAD")
	fork := makeFork(t, root, head)

	git(t, fork, "checkout", "-q", "-b", "upstream", head)
	file := importer(t, fork)
	b, err := os.ReadFile(filepath.Join(fork, file))
	if err != nil {
		t.Fatal(err)
	}
	src := strings.Replace(string(b), "\t\"github.com/hexmill/hexmill/ports\"\n",
		"\tupgradeprobe \"github.com/hexmill/hexmill/adapters/transport\"\n\t\"github.com/hexmill/hexmill/ports\"\n", 1)
	src += "\n// An import upstream added.\nvar _ upgradeprobe.Transport\n"
	write(t, fork, file, src)
	git(t, fork, "commit", "-qam", "upstream: an import in "+file)
	write(t, fork, "app/upgradeprobe.go", "package app\n\nimport \"github.com/hexmill/hexmill/ports\"\n\n// A new framework file.\nvar _ ports.Clock\n")
	git(t, fork, "add", "app/upgradeprobe.go")
	git(t, fork, "commit", "-qm", "upstream: a new file importing ports")
	upstream := git(t, fork, "rev-parse", "HEAD")
	git(t, fork, "checkout", "-q", "fork")

	if conflicts := upgrade(t, fork, upstream); len(conflicts) > 0 {
		t.Errorf("merging upstream's framework changes conflicts in %v, want a clean merge", conflicts)
	}
	if _, err := os.Stat(filepath.Join(fork, "app/upgradeprobe.go")); err != nil {
		t.Errorf("the new framework file did not arrive: %v", err)
	}
	checkFork(t, fork)
}

// makeFork clones the checkout into a temporary directory and makes a fork
// at commit as docs/fork.md says: today's rename tool (make rename
// NAME=fleet) on that tree, then the sample replaced by the README's
// battery handler, its test and the smallest service.go, committed. It
// returns the clone, on branch fork.
func makeFork(t *testing.T, root, commit string) string {
	t.Helper()
	tool := filepath.Join(t.TempDir(), "rename")
	run(t, root, "go", "build", "-o", tool, "./internal/rename")
	fork := filepath.Join(t.TempDir(), "fleet")
	// --shared: the clone reads the checkout's objects, whatever their ref.
	run(t, root, "git", "clone", "-q", "--shared", "--no-checkout", root, fork)
	git(t, fork, "checkout", "-q", "-b", "fork", commit)
	run(t, fork, tool, "-name", "fleet")

	// The README's battery handler, from this tree's README (what a user
	// forking here read), its test and the service.go of docs/fork.md.
	blocks := map[string]string{}
	for _, doc := range []string{"README.md", "docs/fork.md"} {
		b, err := os.ReadFile(filepath.Join(fork, doc))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range block.FindAllStringSubmatch(string(b), -1) {
			var lines []string
			for _, l := range strings.Split(m[3], "\n") {
				lines = append(lines, strings.TrimPrefix(l, m[2]))
			}
			blocks[m[1]] = strings.Join(lines, "\n") + "\n"
		}
	}
	service := blocks["cmd/hexmill/service.go"]
	for _, want := range []string{"domain/battery.go", "domain/battery_test.go", "cmd/hexmill/service.go"} {
		if blocks[want] == "" {
			t.Fatalf("no <!-- fork-test: %s --> block in the fork point's README.md or docs/fork.md", want)
		}
	}
	git(t, fork, "rm", "-rq", "domain")
	entries, err := os.ReadDir(filepath.Join(fork, "cmd", "fleet"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != "main.go" {
			if err := os.RemoveAll(filepath.Join(fork, "cmd", "fleet", e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
	write(t, fork, "domain/battery.go", blocks["domain/battery.go"])
	write(t, fork, "domain/battery_test.go", blocks["domain/battery_test.go"])
	write(t, fork, "cmd/fleet/service.go", strings.Replace(service, `const name = "hexmill"`, `const name = "fleet"`, 1))
	git(t, fork, "add", "-A")
	git(t, fork, "commit", "-qm", "fleet: the battery handler, in place of the sample")
	return fork
}

// upgrade runs docs/fork.md's upgrade block in the fork, upstream/main
// being upstream, and returns the paths that conflicted in the merge. It
// fails the test on a conflict outside the fork's own files.
func upgrade(t *testing.T, fork, upstream string) []string {
	t.Helper()
	steps := upgradeSteps(t)
	var conflicts []string
	for _, step := range steps {
		step = strings.ReplaceAll(step, "upstream/main", upstream)
		cmd := exec.Command("sh", "-c", step)
		cmd.Dir = fork
		out, err := cmd.CombinedOutput()
		if strings.HasPrefix(step, "git merge") {
			// git merge stops with status 1 on conflicts: which are they?
			conflicts = strings.Fields(git(t, fork, "diff", "--name-only", "--diff-filter=U"))
			for _, c := range conflicts {
				if !own(c) {
					t.Errorf("the merge conflicts in the framework's %s", c)
				}
			}
			if t.Failed() {
				t.FailNow()
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v\n%s", step, err, out)
		}
	}
	if git(t, fork, "rev-parse", "HEAD^2") != git(t, fork, "rev-parse", upstream) {
		t.Fatal("the upgrade made no merge commit of upstream")
	}
	return conflicts
}

// upgradeSteps reads the commands of the block marked <!-- upgrade-test -->
// in this checkout's docs/fork.md.
func upgradeSteps(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(checkout(t), "docs", "fork.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)<!-- upgrade-test -->\\s*\\n```sh\\n(.*?)\\n```").FindSubmatch(b)
	if m == nil {
		t.Fatal("docs/fork.md has no <!-- upgrade-test --> block: the upgrade's commands")
	}
	var steps []string
	for _, l := range strings.Split(string(m[1]), "\n") {
		if l, _, _ = strings.Cut(l, "#"); strings.TrimSpace(l) != "" {
			steps = append(steps, strings.TrimSpace(l))
		}
	}
	return steps
}

// checkFork builds and vets the fork and runs its own tests, offline.
func checkFork(t *testing.T, fork string) {
	t.Helper()
	for _, step := range [][]string{
		{"go", "build", "./..."},
		{"go", "vet", "./..."},
		{"go", "test", "-count=1", "./domain/...", "./cmd/..."},
	} {
		run(t, fork, step[0], step[1:]...)
	}
}

// importer finds a framework file under app/ that imports ports, for an
// upstream commit to add an import next to it.
func importer(t *testing.T, dir string) string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "app", "*.go"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err == nil && !strings.HasSuffix(f, "_test.go") && strings.Contains(string(b), "\t\"github.com/hexmill/hexmill/ports\"\n") {
			rel, _ := filepath.Rel(dir, f)
			return filepath.ToSlash(rel)
		}
	}
	t.Fatal("no file under app/ imports ports")
	return ""
}

// layout says whether commit has today's ownership line (see
// TestUpgradeMergesRealHistory).
func layout(t *testing.T, root, commit string) bool {
	top := strings.Fields(git(t, root, "ls-tree", "-d", "--name-only", commit, "ports", "adapters/transport", "app", "domain"))
	if len(top) != 4 {
		return false
	}
	cmds := strings.Fields(git(t, root, "ls-tree", "-d", "--name-only", commit, "cmd/"))
	if len(cmds) != 1 {
		return false
	}
	service, err := exec.Command("git", "-C", root, "show", commit+":"+cmds[0]+"/service.go").Output()
	return err == nil && regexp.MustCompile(`(?m)^const name = "`+regexp.QuoteMeta(strings.TrimPrefix(cmds[0], "cmd/"))+`"`).Match(service)
}

// block is a code block marked <!-- fork-test: path --> in a document.
var block = regexp.MustCompile("(?s)<!-- fork-test: (\\S+) -->\\s*\\n([ \\t]*)```[a-z]*\\n(.*?)\\n[ \\t]*```")

// checkout is the root of this checkout, skipping the test where it is no
// git work tree.
func checkout(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		t.Fatalf("go list -m: %v", err)
	}
	root := strings.TrimSpace(string(out))
	if err := exec.Command("git", "-C", root, "rev-parse", "HEAD").Run(); err != nil {
		t.Skipf("%s is no git checkout (%v): the test replays its history", root, err)
	}
	return root
}

func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	return strings.TrimSpace(run(t, dir, "git", args...))
}

func run(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if e, ok := err.(*exec.ExitError); ok {
			stderr = e.Stderr
		}
		t.Fatalf("%s %s in %s: %v\n%s%s", name, strings.Join(args, " "), dir, err, out, stderr)
	}
	return string(out)
}

func write(t *testing.T, dir, file, content string) {
	t.Helper()
	path := filepath.Join(dir, file)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
