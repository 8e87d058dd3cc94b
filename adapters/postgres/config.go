// Package postgres is the PostgreSQL adapter: a connection pool with
// readiness, embedded forward-only migrations applied under an advisory
// lock, idempotent handling (a processed-messages table written in the
// handler's transaction) and a transactional outbox with its relay.
//
// See docs/state.md for the guarantees and the tables.
package postgres

import (
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/hexmill/hexmill/adapters/transport/secret"
	"github.com/hexmill/hexmill/ports"
)

// Config says where the database is and how the pool behaves.
type Config struct {
	// URL is a postgres:// connection URL without a password, e.g.
	// postgres://hexmill@db:5432/hexmill?sslmode=require. When set, Host,
	// Port, Database, User, SSLMode and TargetSessionAttrs are ignored.
	// Several hosts make pgx try them in turn on every new connection:
	// postgres://hexmill@db1:5432,db2:5432/hexmill?target_session_attrs=read-write
	// (docs/state.md, "Failover").
	URL string `yaml:"url"`

	// Host is one host, or several separated by commas (db1,db2:5433),
	// tried in turn on every new connection; a host without a port has
	// Port. Default 127.0.0.1.
	Host     string        `yaml:"host"`
	Port     int           `yaml:"port"`     // default 5432
	Database string        `yaml:"database"` // default postgres
	User     string        `yaml:"user"`     // default postgres
	Password secret.String `yaml:"password"`
	// SSLMode is libpq's sslmode (disable, require, verify-full, ...);
	// default prefer on a loopback host, verify-full on any other. Ignored
	// when URL is set (its own sslmode, with the same default).
	SSLMode string `yaml:"sslmode"`
	// TargetSessionAttrs is libpq's target_session_attrs: which of the
	// hosts a connection may use. read-write (a primary) with several
	// hosts, so that a standby is skipped; any, read-only, primary,
	// standby, prefer-standby. Default any (pgx's). Ignored when URL is
	// set: put it in the URL.
	TargetSessionAttrs string `yaml:"target_session_attrs"`
	// AllowPlaintext lets sslmode disable, allow or prefer reach a host
	// that is not loopback (refused otherwise: the password and the data
	// could travel unencrypted, or to an impostor); it logs a warning at
	// every start. For a local network only.
	AllowPlaintext bool `yaml:"allow_plaintext"`

	// Schema holds the tables (the framework's and the fork's); it is
	// created by Migrate and set as the search_path. Default public.
	Schema string `yaml:"schema"`

	MaxConns          int32         `yaml:"max_conns"`           // default 10
	MinConns          int32         `yaml:"min_conns"`           // default 0
	MaxConnLifetime   time.Duration `yaml:"max_conn_lifetime"`   // default 1h
	MaxConnIdleTime   time.Duration `yaml:"max_conn_idle_time"`  // default 30m
	HealthCheckPeriod time.Duration `yaml:"health_check_period"` // default 15s
	ConnectTimeout    time.Duration `yaml:"connect_timeout"`     // default 5s
}

var schemaName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// WithDefaults returns c with its unset fields set to the defaults New
// uses, for showing the effective configuration. With URL set, the fields
// it replaces (host, port, database, user, sslmode) stay as they are.
func (c Config) WithDefaults() Config {
	d := c.withDefaults()
	if c.URL != "" {
		d.Host, d.Port, d.Database, d.User, d.SSLMode = c.Host, c.Port, c.Database, c.User, c.SSLMode
	}
	return d
}

// withDefaults returns c with the unset fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.Host == "" {
		c.Host = "127.0.0.1"
	}
	if c.Port == 0 {
		c.Port = 5432
	}
	if c.Database == "" {
		c.Database = "postgres"
	}
	if c.User == "" {
		c.User = "postgres"
	}
	if c.SSLMode == "" {
		c.SSLMode = defaultSSLMode(splitHosts(c.Host))
	}
	if c.Schema == "" {
		c.Schema = "public"
	}
	if c.MaxConns == 0 {
		c.MaxConns = 10
	}
	if c.MaxConnLifetime == 0 {
		c.MaxConnLifetime = time.Hour
	}
	if c.MaxConnIdleTime == 0 {
		c.MaxConnIdleTime = 30 * time.Minute
	}
	if c.HealthCheckPeriod == 0 {
		c.HealthCheckPeriod = 15 * time.Second
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 5 * time.Second
	}
	return c
}

// Validate reports the first setting that cannot work as a
// *ports.FieldError naming the field (its YAML name) and what to put
// there. It never includes the password.
func (c Config) Validate() error {
	c = c.withDefaults()
	if c.URL != "" {
		u, err := url.Parse(c.URL)
		if err != nil {
			return &ports.FieldError{Field: "url", Fix: "not a URL; want postgres://user@host:5432/db?sslmode=..."}
		}
		if u.Scheme != "postgres" && u.Scheme != "postgresql" {
			return ports.FieldErrorf("url", "scheme %q; want postgres://", u.Scheme)
		}
		if _, set := u.User.Password(); set {
			return &ports.FieldError{Field: "url", Fix: "holds a password; move it to postgres.password (kept out of logs and dumps)"}
		}
		// libpq takes secrets in the query too; they would be logged and
		// dumped with the URL.
		q, err := url.ParseQuery(u.RawQuery)
		if err != nil {
			return &ports.FieldError{Field: "url", Fix: "its query does not parse; want postgres://user@host:5432/db?sslmode=..."}
		}
		if q.Has("password") {
			return &ports.FieldError{Field: "url", Fix: "holds password= in its query; move it to postgres.password (kept out of logs and dumps)"}
		}
		if q.Has("sslpassword") {
			return &ports.FieldError{Field: "url", Fix: "holds sslpassword= in its query, which is logged and dumped with the URL; remove it and give the client key unencrypted, readable by the service only"}
		}
	}
	if c.Port < 1 || c.Port > 65535 {
		return ports.FieldErrorf("port", "%d; want 1..65535", c.Port)
	}
	if !schemaName.MatchString(c.Schema) {
		return ports.FieldErrorf("schema", "%q; want a lower-case identifier (letters, digits, _)", c.Schema)
	}
	switch c.TargetSessionAttrs {
	case "", "any", "read-write", "read-only", "primary", "standby", "prefer-standby":
	default:
		return ports.FieldErrorf("target_session_attrs", "%q; want read-write (a primary among several hosts), any, read-only, primary, standby or prefer-standby", c.TargetSessionAttrs)
	}
	if c.URL == "" {
		for _, h := range strings.Split(c.Host, ",") {
			if strings.TrimSpace(h) == "" {
				return ports.FieldErrorf("host", "%q has an empty host; want db or db1,db2:5433", c.Host)
			}
		}
	}
	if c.MaxConns < 2 {
		return ports.FieldErrorf("max_conns", "%d; want 2 or more (the outbox relay holds one)", c.MaxConns)
	}
	if c.MinConns < 0 || c.MinConns > c.MaxConns {
		return ports.FieldErrorf("min_conns", "%d; want 0..max_conns (%d)", c.MinConns, c.MaxConns)
	}
	for _, d := range []struct {
		field string
		d     time.Duration
	}{
		{"max_conn_lifetime", c.MaxConnLifetime}, {"max_conn_idle_time", c.MaxConnIdleTime},
		{"health_check_period", c.HealthCheckPeriod}, {"connect_timeout", c.ConnectTimeout},
	} {
		if d.d < 0 {
			return ports.FieldErrorf(d.field, "%s; want a positive duration", d.d)
		}
	}
	return c.checkPlaintext()
}

// LogValue keeps the password out of logs.
func (c Config) LogValue() slog.Value {
	c = c.withDefaults()
	target := c.URL
	if target == "" {
		target = c.User + "@" + c.hosts() + "/" + c.Database
	}
	return slog.GroupValue(slog.String("target", target), slog.String("schema", c.Schema),
		slog.Int("max_conns", int(c.MaxConns)))
}

// poolConfig turns c (with defaults, validated) into pgx's pool config.
func (c Config) poolConfig() (*pgxpool.Config, error) {
	conn := withSSLMode(c.URL)
	if conn == "" {
		query := url.Values{"sslmode": {c.SSLMode}}
		if c.TargetSessionAttrs != "" {
			query.Set("target_session_attrs", c.TargetSessionAttrs)
		}
		u := url.URL{
			Scheme:   "postgres",
			User:     url.User(c.User),
			Host:     c.hosts(),
			Path:     "/" + c.Database,
			RawQuery: query.Encode(),
		}
		conn = u.String()
	}
	pc, err := pgxpool.ParseConfig(conn)
	if err != nil {
		// pgx redacts passwords in its parse errors; ours has none anyway.
		return nil, fmt.Errorf("postgres config: %w", err)
	}
	if c.Password != "" {
		pc.ConnConfig.Password = c.Password.Reveal()
	}
	pc.ConnConfig.ConnectTimeout = c.ConnectTimeout
	pc.ConnConfig.RuntimeParams["search_path"] = c.Schema
	pc.MaxConns = c.MaxConns
	pc.MinConns = c.MinConns
	pc.MaxConnLifetime = c.MaxConnLifetime
	pc.MaxConnIdleTime = c.MaxConnIdleTime
	pc.HealthCheckPeriod = c.HealthCheckPeriod
	return pc, nil
}

// hosts is Host with Port given to each host that has no port of its own,
// as the host list of a URL.
func (c Config) hosts() string {
	hosts := strings.Split(c.Host, ",")
	for i, h := range hosts {
		h = strings.TrimSpace(h)
		if _, _, err := net.SplitHostPort(h); err != nil { // no port of its own
			h = net.JoinHostPort(strings.Trim(h, "[]"), strconv.Itoa(c.Port))
		}
		hosts[i] = h
	}
	return strings.Join(hosts, ",")
}
