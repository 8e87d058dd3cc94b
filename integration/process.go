package integration

import (
	"bufio"
	"encoding/json"
	"io"
	"os/exec"
	"sync"
	"testing"
	"time"
)

// Process is a command the test started whose log lines (JSON, one per
// line, on stderr) are parsed as they come, so that a test can wait for an
// event in the log instead of sleeping.
type Process struct {
	Name string
	Cmd  *exec.Cmd
	wg   sync.WaitGroup

	mu      sync.Mutex
	lines   []map[string]any
	next    int           // the first line WaitLog has not looked at
	changed chan struct{} // closed and replaced on every new line
	exited  bool
	waited  bool
	exit    error
}

// StartProcess starts cmd and reads its stderr. The process is killed when
// the test ends if it still runs.
func StartProcess(t testing.TB, name string, cmd *exec.Cmd) *Process {
	t.Helper()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &Process{Name: name, Cmd: cmd, changed: make(chan struct{})}
	p.wg.Add(1)
	go p.read(stderr)
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = p.Wait()
	})
	return p
}

func (p *Process) read(stderr io.Reader) {
	defer p.wg.Done()
	sc := bufio.NewScanner(stderr)
	sc.Buffer(make([]byte, 1<<20), 4<<20)
	for sc.Scan() {
		var line map[string]any
		if json.Unmarshal(sc.Bytes(), &line) != nil {
			line = map[string]any{"msg": sc.Text()}
		}
		p.mu.Lock()
		p.lines = append(p.lines, line)
		close(p.changed)
		p.changed = make(chan struct{})
		p.mu.Unlock()
	}
	p.mu.Lock()
	p.exited = true
	close(p.changed)
	p.mu.Unlock()
}

// Wait waits for the process and its log reader; it returns the exit error
// (nil for status 0). Safe to call more than once.
func (p *Process) Wait() error {
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.waited {
		p.exit = p.Cmd.Wait()
		p.waited = true
	}
	return p.exit
}

// WaitLog returns the first log line not looked at yet for which match is
// true; it fails the test when the process exits or a minute passes first.
func (p *Process) WaitLog(t testing.TB, what string, match func(map[string]any) bool) map[string]any {
	t.Helper()
	timeout := time.NewTimer(60 * time.Second)
	defer timeout.Stop()
	for {
		p.mu.Lock()
		for p.next < len(p.lines) {
			line := p.lines[p.next]
			p.next++
			if match(line) {
				p.mu.Unlock()
				return line
			}
		}
		exited, changed := p.exited, p.changed
		p.mu.Unlock()
		if exited {
			t.Fatalf("%s exited before logging %s", p.Name, what)
		}
		select {
		case <-changed:
		case <-timeout.C:
			t.Fatalf("%s: no log line: %s", p.Name, what)
		}
	}
}

// CountLog counts the log lines so far for which match is true.
func (p *Process) CountLog(match func(map[string]any) bool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, l := range p.lines {
		if match(l) {
			n++
		}
	}
	return n
}

// Dump logs the last lines of the process's log to the test.
func (p *Process) Dump(t testing.TB, last int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.lines[max(0, len(p.lines)-last):] {
		b, _ := json.Marshal(l)
		t.Logf("%s log: %s", p.Name, b)
	}
}

// MsgIs matches a log line by its message.
func MsgIs(msg string) func(map[string]any) bool {
	return func(l map[string]any) bool { return l["msg"] == msg }
}
