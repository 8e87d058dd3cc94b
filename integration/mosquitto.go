package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/testcontainers/testcontainers-go"
)

// MosquittoBinary is the broker StartMosquitto runs, looked up in PATH.
const MosquittoBinary = "mosquitto"

// MosquittoLimits is the broker configuration that makes silent loss of
// queued QoS 1/2 messages impossible (see docs/mqtt.md): no cap on queued
// or in-flight messages, and the state saved across a restart.
const MosquittoLimits = `max_inflight_messages 0
max_queued_messages 0
max_queued_bytes 0
`

// Mosquitto is a private broker a test owns, on a free port, for what a
// shared broker must not be used for: restarts, TLS listeners, broker
// limits. It is a process when mosquitto is installed, otherwise a
// container of MosquittoImage (see privateContainer). It is stopped when
// the test ends.
type Mosquitto struct {
	t     testing.TB
	dir   string
	conf  string
	port  int
	ports []int
	bin   string // the installed broker, or "" for a container

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	ctr     testcontainers.Container // the container, once created
	running bool                     // the container runs
	control *http.Server
	ctlAddr string
	ctlWG   sync.WaitGroup
}

// StartMosquitto starts a private mosquitto listening on a free loopback
// port (anonymous access, persistence in a temporary directory, the limits
// of MosquittoLimits), with extra appended to its configuration (for
// example a TLS listener: list its ports in waitPorts so Start waits for
// them too). Without mosquitto installed the broker runs in a container;
// the test is skipped when no Docker engine answers either.
func StartMosquitto(t testing.TB, extra string, waitPorts ...int) *Mosquitto {
	t.Helper()
	bin, err := exec.LookPath(MosquittoBinary)
	if err != nil {
		bin = ""
		if testing.Short() {
			t.Skipf("short mode: no %s installed for a private broker", MosquittoBinary)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := DockerAvailable(ctx); err != nil {
			t.Skipf("no private MQTT broker: install mosquitto or run a Docker engine (%v)", err)
		}
	}
	dir := t.TempDir()
	m := &Mosquitto{t: t, dir: dir, port: FreePort(t), bin: bin}
	m.ports = append([]int{m.port}, waitPorts...)
	// Run as the test's user: started by root, mosquitto would switch to
	// the mosquitto user and could not save its state in dir.
	me := "root"
	if u, err := user.Current(); err == nil {
		me = u.Username
	}
	conf := fmt.Sprintf(`per_listener_settings false
user %s
allow_anonymous true
persistence true
persistence_location %s/
autosave_interval 0
log_dest stderr
log_type error
log_type warning
%s
listener %d 127.0.0.1
%s
`, me, dir, MosquittoLimits, m.port, extra)
	m.conf = filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(m.conf, []byte(conf), 0o600); err != nil {
		t.Fatalf("mosquitto config: %v", err)
	}
	m.Start()
	t.Cleanup(func() {
		m.stopControl()
		m.Stop()
		if m.ctr != nil {
			if err := testcontainers.TerminateContainer(m.ctr); err != nil {
				t.Errorf("remove mosquitto container: %v", err)
			}
		}
	})
	return m
}

// FreePort returns a TCP port free on 127.0.0.1 at the time of the call.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Addr is the host:port of the plain listener.
func (m *Mosquitto) Addr() string { return "127.0.0.1:" + strconv.Itoa(m.port) }

// URL is the mqtt:// URL of the plain listener.
func (m *Mosquitto) URL() string { return "mqtt://" + m.Addr() }

// Dir is the broker's directory (configuration, persistence); tests put
// certificates there.
func (m *Mosquitto) Dir() string { return m.dir }

// Start starts the broker (again) and waits until every port listens.
func (m *Mosquitto) Start() {
	m.t.Helper()
	if err := m.start(); err != nil {
		m.t.Fatal(err)
	}
}

func (m *Mosquitto) start() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.bin == "" {
		return m.startContainer()
	}
	if m.cmd != nil {
		return nil
	}
	cmd := exec.Command(m.bin, "-c", m.conf)
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	cmd.Stdout = stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start mosquitto: %w", err)
	}
	exited := make(chan struct{})
	go func() { // owned: Stop waits for exited
		_ = cmd.Wait()
		close(exited)
	}()
	m.cmd, m.exited = cmd, exited
	err := m.awaitPorts(10*time.Second, func() bool {
		select {
		case <-exited:
			return false
		default:
			return true
		}
	}, stderr.String)
	if err != nil {
		select {
		case <-exited:
			m.cmd = nil
		default:
		}
	}
	return err
}

// startContainer creates the broker's container, or starts it again.
func (m *Mosquitto) startContainer() error {
	if m.running {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if m.ctr == nil {
		ctr, err := privateContainer(ctx, MosquittoImage, []string{"mosquitto", "-c", m.conf}, nil, nil)
		if err != nil {
			return fmt.Errorf("mosquitto container: %w", err)
		}
		m.ctr = ctr
	} else if err := m.ctr.Start(ctx); err != nil {
		return fmt.Errorf("start mosquitto container: %w", err)
	}
	m.running = true
	// A container takes longer to start than a process.
	return m.awaitPorts(30*time.Second, func() bool { return containerRunning(ctx, m.ctr) },
		func() string { return containerLogs(m.ctr) })
}

// awaitPorts waits until every port listens, while alive reports the
// broker alive; output tells what it printed.
func (m *Mosquitto) awaitPorts(timeout time.Duration, alive func() bool, output func() string) error {
	deadline := time.Now().Add(timeout)
	for _, port := range m.ports {
		for {
			c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
			if err == nil {
				_ = c.Close()
				break
			}
			if !alive() {
				return fmt.Errorf("mosquitto exited at start: %s", output())
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("mosquitto does not listen on %d: %s", port, output())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return nil
}

// lockedBuffer collects a process's output for error messages.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Stop stops the broker gracefully (SIGTERM: it saves its sessions and
// queued messages) and waits for it to exit.
func (m *Mosquitto) Stop() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.bin == "" {
		if m.running {
			timeout := 10 * time.Second
			if err := m.ctr.Stop(context.Background(), &timeout); err != nil {
				m.t.Errorf("stop mosquitto container: %v", err)
			}
			m.running = false
		}
		return
	}
	if m.cmd == nil {
		return
	}
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.exited:
	case <-time.After(10 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.exited
	}
	m.cmd = nil
}

// Kill ends the broker the way a crash or a lost machine does (SIGKILL,
// or a container killed): it saves nothing, and clients see their
// connections reset. The broker stays down unless Start is called.
func (m *Mosquitto) Kill() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.bin == "" {
		if m.running {
			var now time.Duration // no grace: docker stop -t 0 sends SIGKILL right after SIGTERM
			if err := m.ctr.Stop(context.Background(), &now); err != nil {
				m.t.Errorf("kill mosquitto container: %v", err)
			}
			m.running = false
		}
		return
	}
	if m.cmd == nil {
		return
	}
	_ = m.cmd.Process.Kill()
	<-m.exited
	m.cmd = nil
}

// Restart stops and starts the broker on the same port.
func (m *Mosquitto) Restart() {
	m.t.Helper()
	m.Stop()
	m.Start()
}

func (m *Mosquitto) restart() error {
	m.Stop()
	return m.start()
}

// RestartCommand is a command line that restarts this broker and returns
// once it listens again (for watermill's Features.RestartServiceCommand):
// curl asks a control endpoint of the test process.
func (m *Mosquitto) RestartCommand() []string {
	m.t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.control == nil {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			m.t.Fatalf("mosquitto control listener: %v", err)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("POST /restart", func(w http.ResponseWriter, _ *http.Request) {
			if err := m.restart(); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			fmt.Fprintln(w, "restarted")
		})
		m.control = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		m.ctlAddr = l.Addr().String()
		m.ctlWG.Add(1)
		go func() {
			defer m.ctlWG.Done()
			if err := m.control.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				m.t.Errorf("mosquitto control: %v", err)
			}
		}()
	}
	return []string{"curl", "-fsS", "-X", "POST", "http://" + m.ctlAddr + "/restart"}
}

func (m *Mosquitto) stopControl() {
	m.mu.Lock()
	srv := m.control
	m.mu.Unlock()
	if srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
	m.ctlWG.Wait()
}
