package rabbitmq

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/adapters/transport/secret"
	"github.com/hexmill/hexmill/adapters/transport/tlsfiles"
	"github.com/hexmill/hexmill/ports"
)

// Config configures the rabbitmq transport: where the broker is, how to
// authenticate, how to reconnect, how to publish, and the topology declared
// on every connect.
//
// The broker is named either by URL or by host, port, vhost, user and
// password; a field set explicitly overrides the same part of the URL. A
// cluster is named by URLs, one per node, instead of URL.
type Config struct {
	// URL is an AMQP 0-9-1 URI, amqp:// or amqps://. A password in it is
	// redacted wherever the URL is printed; prefer the password field.
	URL URL `yaml:"url"`
	// URLs are the nodes of a cluster, one URI each, instead of URL. The
	// start and every reconnect try them in turn from a random first node;
	// VHost, User and Password apply to each.
	URLs URLList `yaml:"urls"`
	// Host, Port, VHost, User and Password override the URL's parts.
	Host     string        `yaml:"host"`
	Port     int           `yaml:"port"`
	VHost    string        `yaml:"vhost"`
	User     string        `yaml:"user"`
	Password secret.String `yaml:"password"`
	// ConnectionName is shown in the management UI (client property
	// connection_name) and starts consumer tags; the service sets its name
	// when this is empty.
	ConnectionName string `yaml:"connection_name"`
	// Heartbeat is the AMQP heartbeat interval: a dead peer is noticed
	// after about twice this.
	Heartbeat time.Duration `yaml:"heartbeat"`
	// DialTimeout bounds the TCP and TLS handshake of one connection attempt.
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// BlockedUnreadyAfter is how long the broker may block the connection
	// (a resource alarm: memory or disk) before Ready reports it.
	BlockedUnreadyAfter time.Duration `yaml:"blocked_unready_after"`

	TLS       TLSConfig       `yaml:"tls"`
	Reconnect ReconnectConfig `yaml:"reconnect"`
	Publish   PublishConfig   `yaml:"publish"`

	// AllowPlaintext lets the credentials travel over amqp:// to a broker
	// that is not loopback (refused otherwise); it logs a warning at every
	// start. For a local network only.
	AllowPlaintext bool `yaml:"allow_plaintext"`

	// SubscriberQueue is the template of the queue a subscription declares
	// itself when its binding sets the bind_exchange option (see
	// SubscriberConfig). Its name is ignored.
	SubscriberQueue QueueConfig `yaml:"subscriber_queue"`

	// Exchanges, Queues and Bindings are declared on start and again after
	// every reconnect. A queue that exists with other arguments fails start
	// with a MismatchError.
	Exchanges []ExchangeConfig `yaml:"exchanges"`
	Queues    []QueueConfig    `yaml:"queues"`
	Bindings  []BindingConfig  `yaml:"bindings"`
	// MaxMessageBytes is the largest message a subscriber hands out
	// (bindings may lower or raise it: handlers.<name>.max_message_bytes);
	// a larger one is poisoned with reason too_large. 0 means
	// transport.DefaultMaxMessageBytes (1 MiB).
	MaxMessageBytes int `yaml:"max_message_bytes"`
}

// TLSConfig configures amqps. TLS is on when the URL is amqps:// or
// Enabled is true.
type TLSConfig struct {
	Enabled bool `yaml:"enabled"`
	// CAFile is a PEM bundle of the CAs that sign the broker's certificate;
	// empty uses the system roots.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are the client certificate and key presented to
	// the broker (PEM); both or neither.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName is the name the broker's certificate must carry; empty
	// uses the host.
	ServerName string `yaml:"server_name"`
}

// ReconnectConfig is the exponential backoff between connection attempts
// after a connection is lost. It never gives up: the service stays up and
// reports not ready until the broker is back.
type ReconnectConfig struct {
	InitialInterval time.Duration `yaml:"initial_interval"`
	MaxInterval     time.Duration `yaml:"max_interval"`
	Multiplier      float64       `yaml:"multiplier"`
}

// PublishConfig are the defaults of every publisher of the transport; an
// event binding's options override Exchange and Mandatory.
type PublishConfig struct {
	// Exchange the events are published to; "" is the default exchange,
	// where the routing key (the binding's topic) is a queue name.
	Exchange string `yaml:"exchange"`
	// Persistent marks messages delivery mode 2 (default true).
	Persistent *bool `yaml:"persistent"`
	// Mandatory makes an unroutable message an error (default true).
	Mandatory *bool `yaml:"mandatory"`
	// Confirm waits for the broker's publisher confirm before Publish
	// returns (default true). Confirms are pipelined: many messages are in
	// flight on each channel.
	Confirm *bool `yaml:"confirm"`
	// Channels is the number of long-lived channels per publisher; calls
	// are spread over them.
	Channels int `yaml:"channels"`
	// ConfirmTimeout bounds the wait for one publish's confirm.
	ConfirmTimeout time.Duration `yaml:"confirm_timeout"`
	// OutageWait is how long a publish waits for the connection to come
	// back during an outage before it fails; 0 fails at once.
	OutageWait time.Duration `yaml:"outage_wait"`
}

// Exchange types.
const (
	ExchangeDirect  = "direct"
	ExchangeTopic   = "topic"
	ExchangeFanout  = "fanout"
	ExchangeHeaders = "headers"
)

// ExchangeConfig declares one exchange.
type ExchangeConfig struct {
	Name string `yaml:"name"`
	// Type is direct, topic, fanout or headers.
	Type string `yaml:"type"`
	// Durable survives a broker restart (default true).
	Durable    *bool `yaml:"durable"`
	AutoDelete bool  `yaml:"auto_delete"`
	Internal   bool  `yaml:"internal"`
	// Arguments are extra x- arguments, e.g. alternate-exchange.
	Arguments map[string]string `yaml:"arguments"`
}

// Queue types.
const (
	QueueQuorum  = "quorum"
	QueueClassic = "classic"
)

// Overflow behaviours of a queue at its max length.
const (
	OverflowDropHead         = "drop-head"
	OverflowRejectPublish    = "reject-publish"
	OverflowRejectPublishDLX = "reject-publish-dlx"
)

// QueueConfig declares one queue.
type QueueConfig struct {
	Name string `yaml:"name"`
	// Type is quorum (default) or classic.
	Type string `yaml:"type"`
	// Durable survives a broker restart (default true; quorum queues are
	// always durable).
	Durable    *bool `yaml:"durable"`
	AutoDelete bool  `yaml:"auto_delete"`
	// MessageTTL drops (or dead-letters) messages older than this (x-message-ttl).
	MessageTTL time.Duration `yaml:"message_ttl"`
	// Expires deletes the queue after it has been unused this long (x-expires).
	Expires time.Duration `yaml:"expires"`
	// MaxLength and MaxLengthBytes bound the queue (x-max-length,
	// x-max-length-bytes); Overflow says what happens at the bound:
	// drop-head, reject-publish (the publisher gets a nack: an error) or
	// reject-publish-dlx.
	MaxLength      int    `yaml:"max_length"`
	MaxLengthBytes int    `yaml:"max_length_bytes"`
	Overflow       string `yaml:"overflow"`
	// DeadLetterExchange and DeadLetterRoutingKey receive rejected,
	// expired and over-delivered messages.
	DeadLetterExchange   string `yaml:"dead_letter_exchange"`
	DeadLetterRoutingKey string `yaml:"dead_letter_routing_key"`
	// DeliveryLimit dead-letters a message after this many redeliveries
	// (quorum queues only, x-delivery-limit): the broker's backstop
	// against a requeue loop.
	DeliveryLimit int `yaml:"delivery_limit"`
	// Arguments are further x- arguments, passed as strings; numbers are
	// sent as numbers.
	Arguments map[string]string `yaml:"arguments"`
}

// BindingConfig binds a queue (or an exchange) to an exchange.
type BindingConfig struct {
	Exchange string `yaml:"exchange"`
	// Queue to bind; or DestinationExchange for an exchange-to-exchange binding.
	Queue               string `yaml:"queue"`
	DestinationExchange string `yaml:"destination_exchange"`
	RoutingKey          string `yaml:"routing_key"`
	// Arguments, e.g. x-match and the header values for a headers exchange.
	Arguments map[string]string `yaml:"arguments"`
}

// URL is an AMQP URI that never prints its password: String, logs and
// configuration dumps show it redacted.
type URL string

// Redacted returns the URL with the password replaced by "xxxxx".
func (u URL) Redacted() string {
	p, err := url.Parse(string(u))
	if err != nil || p.User == nil {
		if strings.Contains(string(u), "@") {
			return "[redacted]"
		}
		return string(u)
	}
	return p.Redacted()
}

// String implements fmt.Stringer with the password redacted.
func (u URL) String() string { return u.Redacted() }

// MarshalYAML keeps a configuration dump from printing the password.
func (u URL) MarshalYAML() (any, error) { return u.Redacted(), nil }

// MarshalText keeps JSON and other encoders from printing the password.
func (u URL) MarshalText() ([]byte, error) { return []byte(u.Redacted()), nil }

// UnmarshalText reads the URL as written.
func (u *URL) UnmarshalText(b []byte) error {
	*u = URL(b)
	return nil
}

// URLList is a list of AMQP URIs that never prints their passwords.
type URLList []string

// Redacted returns the URLs with their passwords replaced by "xxxxx".
func (l URLList) Redacted() []string {
	out := make([]string, len(l))
	for i, u := range l {
		out[i] = URL(u).Redacted()
	}
	return out
}

// String implements fmt.Stringer with the passwords redacted.
func (l URLList) String() string { return strings.Join(l.Redacted(), ",") }

// MarshalYAML keeps a configuration dump from printing the passwords.
func (l URLList) MarshalYAML() (any, error) { return l.Redacted(), nil }

// MarshalJSON keeps JSON from printing the passwords.
func (l URLList) MarshalJSON() ([]byte, error) { return json.Marshal(l.Redacted()) }

// Defaults.
const (
	DefaultURL = "amqp://127.0.0.1:5672/"
)

// SetDefaults fills the zero values with defaults. It is idempotent.
func (c *Config) SetDefaults() {
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = transport.DefaultMaxMessageBytes
	}
	if c.URL == "" && c.Host == "" && len(c.URLs) == 0 {
		c.URL = DefaultURL
	}
	if c.BlockedUnreadyAfter == 0 {
		c.BlockedUnreadyAfter = 10 * time.Second
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = 10 * time.Second
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 10 * time.Second
	}
	if c.Reconnect.InitialInterval == 0 {
		c.Reconnect.InitialInterval = 200 * time.Millisecond
	}
	if c.Reconnect.MaxInterval == 0 {
		c.Reconnect.MaxInterval = 15 * time.Second
	}
	if c.Reconnect.Multiplier == 0 {
		c.Reconnect.Multiplier = 2
	}
	setBool(&c.Publish.Persistent, true)
	setBool(&c.Publish.Mandatory, true)
	setBool(&c.Publish.Confirm, true)
	if c.Publish.Channels == 0 {
		c.Publish.Channels = 8
	}
	if c.Publish.ConfirmTimeout == 0 {
		c.Publish.ConfirmTimeout = 30 * time.Second
	}
	c.SubscriberQueue.setDefaults()
	for i := range c.Exchanges {
		setBool(&c.Exchanges[i].Durable, true)
	}
	for i := range c.Queues {
		c.Queues[i].setDefaults()
	}
}

func (q *QueueConfig) setDefaults() {
	if q.Type == "" {
		q.Type = QueueQuorum
	}
	setBool(&q.Durable, true)
}

func setBool(p **bool, v bool) {
	if *p == nil {
		*p = &v
	}
}

// Validate reports the first invalid field, named as in YAML, with the fix.
func (c Config) Validate() error {
	if err := transport.CheckMaxMessageBytes("max_message_bytes", c.MaxMessageBytes); err != nil {
		return err
	}
	if len(c.URLs) > 0 {
		switch {
		case c.URL != "":
			return &ports.FieldError{Field: "urls", Fix: "set either url (one node) or urls (the nodes of a cluster), not both"}
		case c.Host != "":
			return &ports.FieldError{Field: "host", Fix: "cannot be combined with urls; give each node's host:port in urls"}
		case c.Port != 0:
			return &ports.FieldError{Field: "port", Fix: "cannot be combined with urls; give each node's host:port in urls"}
		}
	}
	if c.URL != "" {
		if err := checkURL("url", string(c.URL)); err != nil {
			return err
		}
	}
	for i, u := range c.URLs {
		if err := checkURL(fmt.Sprintf("urls[%d]", i), u); err != nil {
			return err
		}
	}
	if c.BlockedUnreadyAfter < 0 {
		return &ports.FieldError{Field: "blocked_unready_after", Fix: "must be a positive duration, e.g. 10s"}
	}
	if c.Port < 0 || c.Port > 65535 {
		return &ports.FieldError{Field: "port", Fix: "must be between 1 and 65535, e.g. 5672"}
	}
	if c.Heartbeat < time.Second {
		return &ports.FieldError{Field: "heartbeat", Fix: "must be 1s or more, e.g. 10s"}
	}
	if c.DialTimeout <= 0 {
		return &ports.FieldError{Field: "dial_timeout", Fix: "must be a positive duration, e.g. 10s"}
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		return &ports.FieldError{Field: "tls.cert_file", Fix: "set both tls.cert_file and tls.key_file, or neither"}
	}
	for _, f := range []struct{ name, path string }{{"tls.ca_file", c.TLS.CAFile}, {"tls.cert_file", c.TLS.CertFile}, {"tls.key_file", c.TLS.KeyFile}} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return ports.FieldErrorf(f.name, "cannot read %s; point it at a PEM file", f.path)
		}
	}
	if err := c.checkPlaintext(); err != nil {
		return err
	}
	if c.Reconnect.InitialInterval <= 0 || c.Reconnect.MaxInterval < c.Reconnect.InitialInterval {
		return &ports.FieldError{Field: "reconnect.initial_interval", Fix: "must be positive and not above reconnect.max_interval, e.g. 200ms and 15s"}
	}
	if c.Reconnect.Multiplier < 1 {
		return &ports.FieldError{Field: "reconnect.multiplier", Fix: "must be 1 or more, e.g. 2"}
	}
	if c.Publish.Channels < 1 || c.Publish.Channels > 256 {
		return &ports.FieldError{Field: "publish.channels", Fix: "must be between 1 and 256, e.g. 8"}
	}
	if c.Publish.ConfirmTimeout <= 0 {
		return &ports.FieldError{Field: "publish.confirm_timeout", Fix: "must be a positive duration, e.g. 30s"}
	}
	if c.Publish.OutageWait < 0 {
		return &ports.FieldError{Field: "publish.outage_wait", Fix: "must be 0 (fail at once) or a positive duration"}
	}
	if err := c.SubscriberQueue.validate("subscriber_queue", false); err != nil {
		return err
	}
	exchanges := map[string]bool{"": true, "amq.direct": true, "amq.topic": true, "amq.fanout": true, "amq.headers": true, "amq.match": true}
	for i, e := range c.Exchanges {
		path := fmt.Sprintf("exchanges[%d]", i)
		if e.Name == "" || strings.HasPrefix(e.Name, "amq.") {
			return ports.FieldErrorf(path+".name", "must be set and not start with amq. (reserved)")
		}
		switch e.Type {
		case ExchangeDirect, ExchangeTopic, ExchangeFanout, ExchangeHeaders:
		default:
			return ports.FieldErrorf(path+".type", "must be direct, topic, fanout or headers")
		}
		exchanges[e.Name] = true
	}
	queues := map[string]bool{}
	for i, q := range c.Queues {
		path := fmt.Sprintf("queues[%d]", i)
		if err := q.validate(path, true); err != nil {
			return err
		}
		queues[q.Name] = true
	}
	for i, b := range c.Bindings {
		path := fmt.Sprintf("bindings[%d]", i)
		if b.Exchange == "" {
			return ports.FieldErrorf(path+".exchange", "must name the source exchange (the default exchange cannot be bound)")
		}
		if (b.Queue == "") == (b.DestinationExchange == "") {
			return ports.FieldErrorf(path+".queue", "set either queue or destination_exchange")
		}
	}
	return nil
}

func checkURL(field, raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return &ports.FieldError{Field: field, Fix: "cannot parse it; write amqp://user@host:5672/vhost and set password separately"}
	}
	if u.Scheme != "amqp" && u.Scheme != "amqps" {
		return &ports.FieldError{Field: field, Fix: "must start with amqp:// or amqps://"}
	}
	return nil
}

func (q QueueConfig) validate(path string, named bool) error {
	if named && q.Name == "" {
		return ports.FieldErrorf(path+".name", "must be set")
	}
	switch q.Type {
	case QueueQuorum, QueueClassic:
	default:
		return ports.FieldErrorf(path+".type", "must be quorum or classic")
	}
	if q.Type == QueueQuorum && q.Durable != nil && !*q.Durable {
		return ports.FieldErrorf(path+".durable", "quorum queues are always durable; use type: classic for a transient queue")
	}
	if q.Type == QueueQuorum && q.AutoDelete {
		return ports.FieldErrorf(path+".auto_delete", "quorum queues cannot auto-delete; use expires or type: classic")
	}
	if q.MessageTTL < 0 || (q.MessageTTL > 0 && q.MessageTTL < time.Millisecond) {
		return ports.FieldErrorf(path+".message_ttl", "must be 0 (none) or at least 1ms")
	}
	if q.Expires < 0 || (q.Expires > 0 && q.Expires < time.Millisecond) {
		return ports.FieldErrorf(path+".expires", "must be 0 (never) or at least 1ms")
	}
	if q.MaxLength < 0 || q.MaxLengthBytes < 0 {
		return ports.FieldErrorf(path+".max_length", "must be 0 (unbounded) or more")
	}
	switch q.Overflow {
	case "", OverflowDropHead, OverflowRejectPublish:
	case OverflowRejectPublishDLX:
		if q.Type == QueueQuorum {
			return ports.FieldErrorf(path+".overflow", "quorum queues do not support reject-publish-dlx; use reject-publish or drop-head")
		}
	default:
		return ports.FieldErrorf(path+".overflow", "must be drop-head, reject-publish or reject-publish-dlx")
	}
	if q.DeliveryLimit < 0 {
		return ports.FieldErrorf(path+".delivery_limit", "must be 0 (none) or more")
	}
	if q.DeliveryLimit > 0 && q.Type != QueueQuorum {
		return ports.FieldErrorf(path+".delivery_limit", "needs type: quorum (classic queues have no delivery limit)")
	}
	if q.DeadLetterRoutingKey != "" && q.DeadLetterExchange == "" {
		return ports.FieldErrorf(path+".dead_letter_routing_key", "needs dead_letter_exchange")
	}
	return nil
}

// dialURLs are the nodes' URLs (one without urls) with the explicit
// fields applied; they carry the password, so they must never be printed.
func (c Config) dialURLs() ([]string, error) {
	if len(c.URLs) == 0 {
		u, err := c.dialURL(string(c.URL), "url")
		if err != nil {
			return nil, err
		}
		return []string{u}, nil
	}
	var out []string
	for i, raw := range c.URLs {
		u, err := c.dialURL(raw, fmt.Sprintf("urls[%d]", i))
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, nil
}

// dialURL is raw with the explicit fields applied.
func (c Config) dialURL(raw, field string) (string, error) {
	if raw == "" {
		raw = DefaultURL
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", &ports.FieldError{Field: field, Fix: "cannot parse it"}
	}
	host, port := u.Hostname(), u.Port()
	if c.Host != "" {
		host = c.Host
	}
	if c.Port != 0 {
		port = strconv.Itoa(c.Port)
	}
	if c.TLS.Enabled {
		u.Scheme = "amqps"
	}
	if port == "" {
		port = "5672"
		if u.Scheme == "amqps" {
			port = "5671"
		}
	}
	u.Host = net.JoinHostPort(host, port)
	user, pass := "", ""
	if u.User != nil {
		user = u.User.Username()
		pass, _ = u.User.Password()
	}
	if c.User != "" {
		user = c.User
	}
	if c.Password != "" {
		pass = c.Password.Reveal()
	}
	switch {
	case user != "" && pass != "":
		u.User = url.UserPassword(user, pass)
	case user != "":
		u.User = url.User(user)
	}
	if c.VHost != "" {
		u.Path = "/" + c.VHost
		u.RawPath = "/" + url.PathEscape(c.VHost)
	}
	return u.String(), nil
}

// redact removes the password of the dial URL from s.
func redact(s, dialURL string) string {
	u, err := url.Parse(dialURL)
	if err != nil || u.User == nil {
		return s
	}
	if p, ok := u.User.Password(); ok && p != "" {
		s = strings.ReplaceAll(s, dialURL, u.Redacted())
		s = strings.ReplaceAll(s, p, "xxxxx")
	}
	return s
}

// tlsConfig builds the client TLS configuration, or nil for plain amqp.
func (c Config) tlsConfig(dialURL string) (*tls.Config, error) {
	u, _ := url.Parse(dialURL)
	if u == nil || u.Scheme != "amqps" {
		return nil, nil
	}
	tc, err := tlsfiles.Files{CAFile: c.TLS.CAFile, CertFile: c.TLS.CertFile, KeyFile: c.TLS.KeyFile, ServerName: c.TLS.ServerName}.Config()
	if err != nil {
		return nil, err
	}
	if tc.ServerName == "" {
		tc.ServerName = u.Hostname()
	}
	return tc, nil
}

// CheckBindingOptions validates a binding's options without connecting:
// a handler binding's (consume) or an event binding's.
func (c Config) CheckBindingOptions(consume bool, options map[string]string) error {
	if consume {
		_, err := settingsOf(SubscriberConfig{Handler: "check", Options: options})
		return err
	}
	_, err := PublishSettings(c.Publish, options)
	return err
}
