package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/testcontainers/testcontainers-go"
	tcpostgres "github.com/testcontainers/testcontainers-go/modules/postgres"

	"github.com/hexmill/hexmill/adapters/postgres"
)

// EnvPostgres is a PostgreSQL URL without a password, e.g.
// postgres://postgres@127.0.0.1:5432/test?sslmode=disable.
const EnvPostgres = "HEXMILL_TEST_POSTGRES_URL"

const postgresImage = "postgres:15-alpine"

// PostgresSchema opens the database cfg names in the schema cfg names,
// which a test owns: the schema is dropped and the pool closed when the
// test ends.
func PostgresSchema(t testing.TB, cfg postgres.Config) *postgres.DB {
	t.Helper()
	db, err := postgres.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := db.Pool().Exec(ctx, `DROP SCHEMA IF EXISTS "`+db.Schema()+`" CASCADE`); err != nil {
			t.Logf("cleanup: drop schema %s: %v", db.Schema(), err)
		}
		_ = db.Close()
	})
	return db
}

// PostgresURL returns the URL of a PostgreSQL to test against: the
// environment's, else a container's. Tests share it: each isolates its
// tables in a schema of its own (see adapters/postgres Config.Schema).
func PostgresURL(t testing.TB) string {
	t.Helper()
	if url := os.Getenv(EnvPostgres); url != "" {
		return url
	}
	c := shared.get(t, EnvPostgres, &shared.postgres)
	hostPort := c.start(t, EnvPostgres, "5432/tcp", func(ctx context.Context) (testcontainers.Container, error) {
		ctr, err := tcpostgres.Run(ctx, postgresImage,
			tcpostgres.WithDatabase("test"),
			testcontainers.WithEnv(map[string]string{"POSTGRES_HOST_AUTH_METHOD": "trust"}),
			tcpostgres.BasicWaitStrategies(),
		)
		if ctr == nil {
			return nil, err
		}
		return ctr, err
	})
	return "postgres://postgres@" + hostPort + "/test?sslmode=disable"
}

// PostgresBinDir holds initdb and pg_ctl for private instances.
var PostgresBinDir = "/usr/lib/postgresql/15/bin"

// Postgres is a private PostgreSQL a test starts, stops and restarts (never
// the shared one): its own data directory and a free loopback port.
type Postgres struct {
	t    testing.TB
	dir  string
	port int
	as   *syscall.Credential // the postgres user's, when the test runs as root
}

// StartPostgres initialises and starts a private PostgreSQL (trust auth,
// user postgres, database postgres). It is skipped when PostgresBinDir
// has no initdb, and stopped when the test ends.
func StartPostgres(t testing.TB) *Postgres {
	t.Helper()
	if testing.Short() {
		t.Skip("short mode: a private PostgreSQL takes seconds to initialise")
	}
	if _, err := os.Stat(filepath.Join(PostgresBinDir, "initdb")); err != nil {
		t.Skipf("no %s/initdb: install PostgreSQL 15 to run tests that need a private instance", PostgresBinDir)
	}
	p := newPostgres(t)
	p.run("initdb", "-D", p.data(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
	p.configure("")
	p.Start()
	t.Cleanup(func() { p.stop("immediate") })
	return p
}

// newPostgres makes the directory and picks the port of a private
// instance; the directory is removed when the test ends.
func newPostgres(t testing.TB) *Postgres {
	t.Helper()
	// Not t.TempDir: its parent is private to this user, and PostgreSQL
	// refuses to run as root, so root runs it as the postgres user.
	dir, err := os.MkdirTemp("", "hexmill-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	p := &Postgres{t: t, dir: dir, port: FreePort(t)}
	if u, err := user.Current(); err == nil && u.Uid == "0" {
		pu, err := user.Lookup("postgres")
		if err != nil {
			t.Skipf("running as root and no postgres user to run PostgreSQL as: %v", err)
		}
		uid, _ := strconv.Atoi(pu.Uid)
		gid, _ := strconv.Atoi(pu.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
		p.as = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	return p
}

// configure appends the instance's own settings, and extra, to its
// postgresql.conf (the last setting of a name wins).
func (p *Postgres) configure(extra string) {
	p.t.Helper()
	conf := fmt.Sprintf("listen_addresses = '127.0.0.1'\nport = %d\nunix_socket_directories = '%s'\nfsync = off\n%s", p.port, p.dir, extra)
	f, err := os.OpenFile(filepath.Join(p.data(), "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		p.t.Fatal(err)
	}
	_, err = f.WriteString(conf)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		p.t.Fatal(err)
	}
}

// StartStandby makes a hot standby of p (pg_basebackup -R: a copy of its
// data streaming p's WAL), starts it on a port of its own and waits until
// p streams to it. With synchronous, p's commits then wait until the
// standby has the commit record (synchronous_standby_names = '*'), so a
// failover to it loses no committed transaction; without, the last
// commits before p dies may be missing on the standby (asynchronous
// replication). The standby is stopped when the test ends; Promote makes
// it a primary.
func (p *Postgres) StartStandby(synchronous bool) *Postgres {
	p.t.Helper()
	s := newPostgres(p.t)
	s.run("pg_basebackup", "-h", "127.0.0.1", "-p", strconv.Itoa(p.port), "-U", "postgres",
		"-D", s.data(), "-R", "-X", "stream", "--no-sync")
	// The copy has p's settings; a promoted standby has no standby of its
	// own to wait for.
	s.configure("synchronous_standby_names = ''\n")
	s.Start()
	p.t.Cleanup(func() { s.stop("immediate") })
	want := "async"
	if synchronous {
		p.exec("ALTER SYSTEM SET synchronous_standby_names = '*'")
		p.exec("SELECT pg_reload_conf()")
		want = "sync"
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		var state string
		err := p.queryRow(ctx, "SELECT coalesce(max(sync_state), '') FROM pg_stat_replication WHERE state = 'streaming'", &state)
		if err == nil && state == want {
			return s
		}
		select {
		case <-ctx.Done():
			p.t.Fatalf("standby on port %d not streaming (%s) after a minute: %q, %v", s.port, want, state, err)
		case <-time.After(20 * time.Millisecond): // polling pg_stat_replication
		}
	}
}

// Promote makes a standby the primary (pg_ctl promote) and waits until it
// accepts writes.
func (p *Postgres) Promote() {
	p.t.Helper()
	p.run("pg_ctl", "-D", p.data(), "-w", "-t", "60", "promote")
}

// exec runs a statement on the instance.
func (p *Postgres) exec(sql string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.URL())
	if err != nil {
		p.t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		p.t.Fatalf("%s: %v", sql, err)
	}
}

// queryRow scans the one row of a query on the instance into dest.
func (p *Postgres) queryRow(ctx context.Context, sql string, dest ...any) error {
	conn, err := pgx.Connect(ctx, p.URL())
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	return conn.QueryRow(ctx, sql).Scan(dest...)
}

// Port is the instance's port.
func (p *Postgres) Port() int { return p.port }

func (p *Postgres) data() string { return filepath.Join(p.dir, "data") }

// URL is the instance's connection URL.
func (p *Postgres) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", p.port)
}

// Start starts the instance and waits until it accepts connections.
func (p *Postgres) Start() {
	p.t.Helper()
	p.run("pg_ctl", "-D", p.data(), "-l", filepath.Join(p.dir, "log"), "-w", "-t", "60", "start")
}

// Kill stops the instance the way a crash does (immediate shutdown: no
// checkpoint, clients cut); committed transactions survive it.
func (p *Postgres) Kill() {
	p.t.Helper()
	p.stop("immediate")
}

func (p *Postgres) stop(mode string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := p.command(ctx, "pg_ctl", "-D", p.data(), "-m", mode, "-w", "stop")
	if out, err := cmd.CombinedOutput(); err != nil {
		// Not running is fine (Cleanup after Kill).
		p.t.Logf("pg_ctl stop: %v: %s", err, out)
	}
}

func (p *Postgres) run(name string, args ...string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := p.command(ctx, name, args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		p.t.Fatalf("%s: %v: %s", name, err, out)
	}
}

// command runs a PostgreSQL program, as the postgres user when the test
// runs as root (PostgreSQL refuses root).
func (p *Postgres) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(PostgresBinDir, name), args...)
	cmd.Dir = p.dir
	if p.as != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.as}
	}
	return cmd
}
