package integration

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"
)

// EnvRabbitMQServer names the rabbitmq-server script a private node runs;
// by default, when rabbitmq-server is in PATH, the one under
// /usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin.
const EnvRabbitMQServer = "HEXMILL_TEST_RABBITMQ_SERVER"

// ErrNoRabbitMQServer means neither a RabbitMQ installation nor a Docker
// engine was found to start a private node with; tests skip.
var ErrNoRabbitMQServer = errors.New("no rabbitmq-server found and no Docker engine (install RabbitMQ, set " + EnvRabbitMQServer + ", or run a Docker engine)")

// RabbitMQNode is a private RabbitMQ node started by a test on free
// loopback ports, with its own configuration, plugins and data directory,
// so a test can configure a broker without touching the shared one. It
// takes a few seconds to start. It is a process when RabbitMQ is
// installed, otherwise a container of RabbitMQImage (see
// privateContainer).
type RabbitMQNode struct {
	// Addr is the AMQP listener's host:port (AMQP 0-9-1 and, with the
	// rabbitmq_amqp1_0 plugin, AMQP 1.0).
	Addr string
	Name string

	cmd    *exec.Cmd
	ctr    testcontainers.Container // instead of cmd
	dir    string
	done   chan struct{} // closed when the node's output ends
	ctl    string        // the rabbitmqctl script next to the server (process mode)
	env    []string      // the node's environment, for rabbitmqctl
	killed bool

	mu   sync.Mutex
	tail []string // last lines of output, for errors
}

// RabbitMQNodeOptions configure a private node.
type RabbitMQNodeOptions struct {
	// Plugins to enable, e.g. rabbitmq_amqp1_0.
	Plugins []string
	// Config holds further rabbitmq.conf lines; the listener is set by
	// StartRabbitMQNode.
	Config string
	// Dir is where the node keeps its files (a t.TempDir or os.MkdirTemp).
	Dir string
	// StartTimeout bounds the boot; 3 minutes by default (an Erlang node boots
	// in seconds on a quiet machine and in over a minute on a crowded one).
	StartTimeout time.Duration
	// Home is the HOME of the node and of rabbitmqctl, where the Erlang
	// cookie is; Dir by default. Nodes of one cluster share it.
	Home string
	// EPMDPort is the Erlang port mapper's port in container mode (free
	// by default); nodes of one cluster share it.
	EPMDPort int
}

// StartRabbitMQNode boots a private node and returns once it reports
// "completed" (listening). Stop it with Stop.
func StartRabbitMQNode(opts RabbitMQNodeOptions) (*RabbitMQNode, error) {
	return startNode(opts, freePort)
}

// startNode is StartRabbitMQNode with the AMQP listener's port taken from
// listenPort.
func startNode(opts RabbitMQNodeOptions, listenPort func() (int, error)) (*RabbitMQNode, error) {
	server := os.Getenv(EnvRabbitMQServer)
	if server == "" {
		if _, err := exec.LookPath("rabbitmq-server"); err == nil {
			matches, _ := filepath.Glob("/usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin/rabbitmq-server")
			if len(matches) > 0 {
				server = matches[len(matches)-1]
			}
		}
	}
	if server == "" {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := DockerAvailable(ctx); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrNoRabbitMQServer, err)
		}
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 3 * time.Minute
	}
	// A free port is free when freePort looks, not necessarily when the
	// node binds it seconds later: on a busy machine an outgoing
	// connection may take it as its source port meanwhile. A node that
	// could not listen for that reason is started again on new ports.
	var err error
	for range startAttempts {
		var n *RabbitMQNode
		if n, err = startOnce(opts, server, listenPort); err == nil || !strings.Contains(err.Error(), "eaddrinuse") {
			return n, err
		}
	}
	return nil, err
}

// startAttempts bounds the starts of one node whose port was taken.
const startAttempts = 3

// startOnce is one attempt of StartRabbitMQNode, on new ports.
func startOnce(opts RabbitMQNodeOptions, server string, listenPort func() (int, error)) (*RabbitMQNode, error) {
	port, err := listenPort()
	if err != nil {
		return nil, err
	}
	distPort, err := freePort()
	if err != nil {
		return nil, err
	}
	dir := opts.Dir
	name := fmt.Sprintf("hexmill-test-%d-%d@localhost", os.Getpid(), port)
	conf := fmt.Sprintf("listeners.tcp.default = 127.0.0.1:%d\n%s\n", port, opts.Config)
	plugins := "[" + strings.Join(opts.Plugins, ",") + "].\n"
	files := map[string]string{"rabbitmq.conf": conf, "enabled_plugins": plugins, "rabbitmq-env.conf": ""}
	for f, content := range files {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(content), 0o600); err != nil {
			return nil, fmt.Errorf("rabbitmq node: %w", err)
		}
	}
	home := opts.Home
	if home == "" {
		home = dir
	}
	env := []string{
		"HOME=" + home, // the Erlang cookie
		"RABBITMQ_NODENAME=" + name,
		"RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
		"RABBITMQ_NODE_PORT=" + strconv.Itoa(port),
		"RABBITMQ_DIST_PORT=" + strconv.Itoa(distPort),
		"RABBITMQ_CONFIG_FILE=" + filepath.Join(dir, "rabbitmq.conf"),
		"RABBITMQ_ADVANCED_CONFIG_FILE=" + filepath.Join(dir, "advanced.config"),
		"RABBITMQ_CONF_ENV_FILE=" + filepath.Join(dir, "rabbitmq-env.conf"),
		"RABBITMQ_ENABLED_PLUGINS_FILE=" + filepath.Join(dir, "enabled_plugins"),
		"RABBITMQ_PLUGINS_EXPAND_DIR=" + filepath.Join(dir, "plugins-expand"),
		"RABBITMQ_MNESIA_BASE=" + filepath.Join(dir, "mnesia"),
		"RABBITMQ_LOG_BASE=" + filepath.Join(dir, "log"),
		"RABBITMQ_PID_FILE=" + filepath.Join(dir, "node.pid"),
	}
	if server == "" {
		return startRabbitMQContainer(opts, name, port, dir, env)
	}
	cmd := exec.Command(server)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("rabbitmq node: %w", err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("rabbitmq node: start %s: %w", server, err)
	}
	n := &RabbitMQNode{Addr: fmt.Sprintf("127.0.0.1:%d", port), Name: name, cmd: cmd, dir: dir, done: make(chan struct{}),
		ctl: filepath.Join(filepath.Dir(server), "rabbitmqctl"), env: env}
	ready := make(chan struct{})
	go func() { // ends when the node's output ends; Stop waits for it
		defer close(n.done)
		sc := bufio.NewScanner(out)
		signalled := false
		for sc.Scan() {
			line := sc.Text()
			n.mu.Lock()
			n.tail = append(n.tail, line)
			if len(n.tail) > 40 {
				n.tail = n.tail[1:]
			}
			n.mu.Unlock()
			if !signalled && strings.Contains(line, "Starting broker") && strings.Contains(line, "completed") {
				signalled = true
				close(ready)
			}
		}
	}()
	timer := time.NewTimer(opts.StartTimeout)
	defer timer.Stop()
	select {
	case <-ready:
		return n, nil
	case <-n.done:
		n.Stop()
		return nil, fmt.Errorf("rabbitmq node %s exited while starting:\n%s", name, n.output())
	case <-timer.C:
		n.Stop()
		return nil, fmt.Errorf("rabbitmq node %s not up within %s:\n%s", name, opts.StartTimeout, n.output())
	}
}

// startRabbitMQContainer boots the node in a container of RabbitMQImage on
// the host's network, with its own epmd, and waits until it is up.
func startRabbitMQContainer(opts RabbitMQNodeOptions, name string, port int, dir string, env []string) (*RabbitMQNode, error) {
	epmdPort := opts.EPMDPort
	if epmdPort == 0 {
		var err error
		if epmdPort, err = freePort(); err != nil {
			return nil, err
		}
	}
	// The image's own configuration files (/etc/rabbitmq/conf.d) listen
	// on 5672: the node reads an empty directory instead.
	confd := filepath.Join(dir, "conf.d")
	if err := os.MkdirAll(confd, 0o700); err != nil {
		return nil, fmt.Errorf("rabbitmq node: %w", err)
	}
	vars := map[string]string{"ERL_EPMD_PORT": strconv.Itoa(epmdPort), "RABBITMQ_CONFIG_FILES": confd}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		vars[k] = v
	}
	// The log on stdout, where the wait strategy reads it.
	vars["RABBITMQ_LOGS"] = "-"
	ctx, cancel := context.WithTimeout(context.Background(), opts.StartTimeout+time.Minute)
	defer cancel()
	ctr, err := privateContainer(ctx, RabbitMQImage, []string{"rabbitmq-server"}, vars,
		wait.ForLog("Server startup complete").WithStartupTimeout(opts.StartTimeout))
	if err != nil {
		return nil, fmt.Errorf("rabbitmq node %s in a container: %w", name, err)
	}
	return &RabbitMQNode{Addr: fmt.Sprintf("127.0.0.1:%d", port), Name: name, ctr: ctr, dir: dir}, nil
}

func (n *RabbitMQNode) output() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return strings.Join(n.tail, "\n")
}

// URL is the node's AMQP URL for the default user (guest, allowed on
// loopback).
func (n *RabbitMQNode) URL() string { return "amqp://guest:guest@" + n.Addr + "/" }

// Ctl runs rabbitmqctl against the node (in its container in container
// mode) and returns its output; ctx bounds it.
func (n *RabbitMQNode) Ctl(ctx context.Context, args ...string) (string, error) {
	args = append([]string{"-n", n.Name}, args...)
	if n.ctr != nil {
		code, r, err := n.ctr.Exec(ctx, append([]string{"rabbitmqctl"}, args...))
		var out []byte
		if r != nil {
			out, _ = io.ReadAll(r)
		}
		if err == nil && code != 0 {
			err = fmt.Errorf("exit status %d", code)
		}
		if err != nil {
			return string(out), fmt.Errorf("rabbitmqctl %s: %w\n%s", strings.Join(args, " "), err, out)
		}
		return string(out), nil
	}
	cmd := exec.CommandContext(ctx, n.ctl, args...)
	cmd.Env = append(os.Environ(), n.env...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("rabbitmqctl %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// SetMemoryAlarm raises a memory alarm on the node (a vm_memory_high_watermark
// of 0: every publishing connection is blocked) or clears it (0.4, the
// default).
func (n *RabbitMQNode) SetMemoryAlarm(ctx context.Context, on bool) error {
	mark := "0.4"
	if on {
		mark = "0"
	}
	_, err := n.Ctl(ctx, "set_vm_memory_high_watermark", mark)
	return err
}

// Kill ends the node at once (SIGKILL to its process group, or its
// container killed), as a crashed machine would; Stop afterwards only
// cleans up.
func (n *RabbitMQNode) Kill() {
	n.mu.Lock()
	n.killed = true
	n.mu.Unlock()
	if n.ctr != nil {
		zero := time.Duration(0)
		_ = n.ctr.Stop(context.Background(), &zero)
		return
	}
	_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
	<-n.done
}

// Stop terminates the node's process group (SIGTERM, then SIGKILL after
// 20 s) and waits for it.
func (n *RabbitMQNode) Stop() {
	if n.ctr != nil {
		_ = testcontainers.TerminateContainer(n.ctr, testcontainers.StopTimeout(20*time.Second))
		return
	}
	pgid := n.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	timer := time.NewTimer(20 * time.Second)
	defer timer.Stop()
	select {
	case <-n.done:
	case <-timer.C:
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-n.done
	}
	_ = n.cmd.Wait()
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// RabbitMQCluster is a cluster of private nodes (see RabbitMQNode) on
// free loopback ports, joined with rabbitmqctl join_cluster under one
// Erlang cookie.
type RabbitMQCluster struct {
	Nodes []*RabbitMQNode
}

// StartRabbitMQCluster boots n private nodes at once, with one HOME (and
// so one Erlang cookie) under opts.Dir, and joins the others to the first
// (stop_app, join_cluster, start_app). Stop stops them all. Each node's
// StartTimeout is 3 minutes by default (n nodes boot at once).
func StartRabbitMQCluster(n int, opts RabbitMQNodeOptions) (*RabbitMQCluster, error) {
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 3 * time.Minute
	}
	home := filepath.Join(opts.Dir, "home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		return nil, fmt.Errorf("rabbitmq cluster: %w", err)
	}
	// The cookie before any node boots, so that none writes its own.
	cookie := fmt.Sprintf("HEXMILLTEST%dX%d", os.Getpid(), time.Now().UnixNano())
	if err := os.WriteFile(filepath.Join(home, ".erlang.cookie"), []byte(cookie), 0o400); err != nil {
		return nil, fmt.Errorf("rabbitmq cluster: %w", err)
	}
	epmd, err := freePort()
	if err != nil {
		return nil, err
	}
	c := &RabbitMQCluster{Nodes: make([]*RabbitMQNode, n)}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		o := opts
		o.Dir = filepath.Join(opts.Dir, fmt.Sprintf("n%d", i+1))
		o.Home, o.EPMDPort = home, epmd
		if err := os.MkdirAll(o.Dir, 0o700); err != nil {
			return nil, fmt.Errorf("rabbitmq cluster: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.Nodes[i], errs[i] = StartRabbitMQNode(o)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		c.Stop()
		return nil, err
	}
	for _, node := range c.Nodes[1:] {
		for _, args := range [][]string{{"stop_app"}, {"join_cluster", c.Nodes[0].Name}, {"start_app"}} {
			// rabbitmqctl boots a VM of its own: seconds, and minutes on a
			// machine whose cores are taken.
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			_, err := node.Ctl(ctx, args...)
			cancel()
			if err != nil {
				c.Stop()
				return nil, fmt.Errorf("rabbitmq cluster: node %s: %w", node.Name, err)
			}
		}
	}
	return c, nil
}

// URLs are the nodes' AMQP URLs.
func (c *RabbitMQCluster) URLs() []string {
	var urls []string
	for _, n := range c.Nodes {
		urls = append(urls, n.URL())
	}
	return urls
}

// Node returns the node listening on addr (host:port), or nil.
func (c *RabbitMQCluster) Node(addr string) *RabbitMQNode {
	for _, n := range c.Nodes {
		if n.Addr == addr {
			return n
		}
	}
	return nil
}

// Stop stops every node that runs.
func (c *RabbitMQCluster) Stop() {
	var wg sync.WaitGroup
	for _, n := range c.Nodes {
		if n == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.Stop()
		}()
	}
	wg.Wait()
}
