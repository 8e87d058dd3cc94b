// Package mqtt is the MQTT v5 transport: a watermill Publisher and
// Subscriber on eclipse/paho.golang's autopaho, with shared subscriptions
// ($share groups), acknowledgement after handling, persistent sessions and
// in-process redelivery of nacked messages. See docs/mqtt.md.
package mqtt

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/adapters/transport/secret"
	"github.com/hexmill/hexmill/ports"
)

// Config configures the MQTT transport. Every field is set in YAML under
// transports.mqtt (by its yaml name) or by the environment variable
// <PREFIX>TRANSPORTS_MQTT_ (HEXMILL_TRANSPORTS_MQTT_ for hexmill) + the name in upper case.
type Config struct {
	// Servers are broker URLs tried in turn: mqtt://host:1883,
	// mqtts://host:8883, ws://host:8080/mqtt, wss://host:8081/mqtt.
	// Credentials belong in username and password; a password written in
	// a URL anyway is redacted wherever the servers are printed.
	Servers ServerList `yaml:"servers"`
	// ClientID is the template of the client identifier of each
	// connection. It must be unique per connection in the whole system and
	// stable across restarts of one replica: the persistent session, and
	// so the redelivery of unacked messages, belongs to the client ID.
	// Placeholders: {service}, {hostname}, {conn} ("pub" for the publisher
	// connection, the handler name for a subscriber) and {n} (the lowest
	// ordinal not used by another live connection of this process with the
	// same identifier otherwise). It must contain {conn}.
	ClientID string `yaml:"client_id"`
	// Username and Password authenticate the connection.
	Username string        `yaml:"username"`
	Password secret.String `yaml:"password"`
	TLS      TLSConfig     `yaml:"tls"`
	// AllowPlaintext lets the password travel over mqtt:// or ws:// to a
	// server that is not loopback (refused otherwise); it logs a warning
	// at every start. For a local network only.
	AllowPlaintext bool `yaml:"allow_plaintext"`
	// KeepAlive is the MQTT keepalive, in whole seconds (0 turns it off).
	KeepAlive time.Duration `yaml:"keepalive"`
	// SessionExpiry is how long the broker keeps a subscriber's session
	// (its subscriptions, unacked and queued messages) after a disconnect.
	// See docs/mqtt.md for the trade-off in consumer groups.
	SessionExpiry time.Duration `yaml:"session_expiry"`
	// ReceiveMaximum is announced by every subscriber connection: the most
	// unacknowledged QoS 1/2 messages the broker may send it at once. It
	// bounds the subscriber's memory (ReceiveMaximum x message size).
	ReceiveMaximum int `yaml:"receive_maximum"`
	// QoS is the default QoS of publishes and subscriptions; a binding's
	// "qos" option overrides it.
	QoS int `yaml:"qos"`
	// ConnectTimeout bounds one connection attempt.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// ReconnectMin and ReconnectMax bound the exponential backoff between
	// connection attempts.
	ReconnectMin time.Duration `yaml:"reconnect_min"`
	ReconnectMax time.Duration `yaml:"reconnect_max"`
	// PublishTimeout bounds a publish: waiting for a connection and for
	// PUBACK/PUBCOMP.
	PublishTimeout time.Duration `yaml:"publish_timeout"`
	// NackBackoffMin and NackBackoffMax bound the exponential delay before
	// a nacked message is handed to the subscriber again.
	NackBackoffMin time.Duration `yaml:"nack_backoff_min"`
	NackBackoffMax time.Duration `yaml:"nack_backoff_max"`
	// CloseTimeout bounds the clean DISCONNECT at Close; a subscriber's
	// acks given before Close go out with it.
	CloseTimeout time.Duration `yaml:"close_timeout"`

	// Service fills {service} in ClientID; the app sets it from the
	// top-level service name.
	Service string `yaml:"-"`
	// MaxMessageBytes is the largest message a subscriber hands out
	// (bindings may lower or raise it: handlers.<name>.max_message_bytes);
	// a larger one is poisoned with reason too_large. 0 means
	// transport.DefaultMaxMessageBytes (1 MiB).
	MaxMessageBytes int `yaml:"max_message_bytes"`
	// MaxQueuedBytes bounds the payload bytes a subscriber holds arrived
	// and not yet handed out, beside receive_maximum: with large messages
	// it, not the count, bounds the memory (docs/mqtt.md, "Memory bound").
	MaxQueuedBytes int `yaml:"max_queued_bytes"`
}

// TLSConfig configures TLS for mqtts:// and wss:// servers.
type TLSConfig struct {
	// CAFile is a PEM bundle of the CAs that sign the broker's certificate;
	// empty means the system roots.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are the client certificate and its key (PEM),
	// for brokers that authenticate clients by certificate.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName overrides the name checked in the broker's certificate.
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify turns off the broker certificate check (tests only).
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// Binding option keys.
const (
	// OptionQoS is the QoS of a subscription or publish binding: 0, 1 or 2.
	OptionQoS = "qos"
	// OptionRetain makes an event binding publish retained messages: true or false.
	OptionRetain = "retain"
	// OptionMandatory makes a QoS 1/2 publish that the broker answers with
	// reason code 0x10 (no matching subscribers: it dropped the message) an
	// error: true or false (default false). See docs/mqtt.md on mosquitto
	// restarts and $share subscriptions.
	OptionMandatory = "mandatory"
)

// SetDefaults fills the zero values with defaults. It is idempotent.
func (c *Config) SetDefaults() {
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = transport.DefaultMaxMessageBytes
	}
	if c.MaxQueuedBytes == 0 {
		c.MaxQueuedBytes = DefaultMaxQueuedBytes
	}
	if len(c.Servers) == 0 {
		c.Servers = []string{"mqtt://127.0.0.1:1883"}
	}
	if c.ClientID == "" {
		c.ClientID = "{service}-{hostname}-{conn}-{n}"
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = 30 * time.Second
	}
	if c.SessionExpiry == 0 {
		c.SessionExpiry = time.Hour
	}
	if c.ReceiveMaximum == 0 {
		c.ReceiveMaximum = 65535
	}
	if c.QoS == 0 {
		c.QoS = 1
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	if c.ReconnectMin == 0 {
		c.ReconnectMin = 250 * time.Millisecond
	}
	if c.ReconnectMax == 0 {
		c.ReconnectMax = 30 * time.Second
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = 30 * time.Second
	}
	if c.NackBackoffMin == 0 {
		c.NackBackoffMin = 100 * time.Millisecond
	}
	if c.NackBackoffMax == 0 {
		c.NackBackoffMax = 10 * time.Second
	}
	if c.CloseTimeout == 0 {
		c.CloseTimeout = 5 * time.Second
	}
	if c.Service == "" {
		c.Service = "mqtt"
	}
}

// Validate reports the first invalid field, named as in YAML, with the fix.
// It never prints the password.
func (c Config) Validate() error {
	if err := transport.CheckMaxMessageBytes("max_message_bytes", c.MaxMessageBytes); err != nil {
		return err
	}
	if c.MaxQueuedBytes < 0 {
		return &ports.FieldError{Field: "max_queued_bytes", Fix: "must be 0 (the default, 64 MiB) or more, e.g. 67108864"}
	}
	if len(c.Servers) == 0 {
		return &ports.FieldError{Field: "servers", Fix: "at least one server URL, e.g. mqtt://127.0.0.1:1883"}
	}
	for i, s := range c.Servers {
		u, err := url.Parse(s)
		if err != nil {
			// Not echoed: what does not parse may hold a password.
			return ports.FieldErrorf("servers", "item %d does not parse as a URL; use e.g. mqtt://127.0.0.1:1883, credentials in username and password", i+1)
		}
		if u.Host == "" {
			return ports.FieldErrorf("servers", "%q is not a URL; use e.g. mqtt://127.0.0.1:1883", redactURL(s))
		}
		switch u.Scheme {
		case "mqtt", "mqtts", "ws", "wss":
		default:
			return ports.FieldErrorf("servers", "scheme %q in %q is not supported; use mqtt, mqtts, ws or wss", u.Scheme, redactURL(s))
		}
		if u.User != nil {
			return ports.FieldErrorf("servers", "%q carries credentials; set username and password instead", redactURL(s))
		}
	}
	if !strings.Contains(c.ClientID, "{conn}") {
		return &ports.FieldError{Field: "client_id", Fix: "must contain {conn} so the publisher and each subscriber get their own session, e.g. {service}-{hostname}-{conn}-{n}"}
	}
	if err := checkTemplate(c.ClientID); err != nil {
		return ports.FieldErrorf("client_id", "%v", err)
	}
	if c.Password != "" && c.Username == "" {
		return &ports.FieldError{Field: "username", Fix: "must be set when password is"}
	}
	if err := c.checkPlaintext(); err != nil {
		return err
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		return &ports.FieldError{Field: "tls.cert_file", Fix: "set both tls.cert_file and tls.key_file for client-certificate auth, or neither"}
	}
	for _, f := range []struct{ name, path string }{{"tls.ca_file", c.TLS.CAFile}, {"tls.cert_file", c.TLS.CertFile}, {"tls.key_file", c.TLS.KeyFile}} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return ports.FieldErrorf(f.name, "%v; point it to a readable PEM file", err)
		}
	}
	if c.KeepAlive < 0 || c.KeepAlive > math.MaxUint16*time.Second || c.KeepAlive%time.Second != 0 {
		return &ports.FieldError{Field: "keepalive", Fix: "must be whole seconds between 0s and 65535s, e.g. 30s"}
	}
	if c.SessionExpiry <= 0 || c.SessionExpiry%time.Second != 0 || c.SessionExpiry/time.Second >= math.MaxUint32 {
		return &ports.FieldError{Field: "session_expiry", Fix: "must be whole seconds above 0 (a persistent session keeps unacked messages across restarts), e.g. 1h"}
	}
	if c.ReceiveMaximum < 1 || c.ReceiveMaximum > math.MaxUint16 {
		return &ports.FieldError{Field: "receive_maximum", Fix: "must be between 1 and 65535, e.g. 65535"}
	}
	if c.QoS < 0 || c.QoS > 2 {
		return &ports.FieldError{Field: "qos", Fix: "must be 0, 1 or 2"}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"connect_timeout", c.ConnectTimeout}, {"reconnect_min", c.ReconnectMin}, {"publish_timeout", c.PublishTimeout},
		{"nack_backoff_min", c.NackBackoffMin}, {"close_timeout", c.CloseTimeout},
	} {
		if d.v <= 0 {
			return ports.FieldErrorf(d.name, "must be a positive duration")
		}
	}
	if c.ReconnectMax < c.ReconnectMin {
		return &ports.FieldError{Field: "reconnect_max", Fix: "must not be below reconnect_min, e.g. 250ms and 30s"}
	}
	if c.NackBackoffMax < c.NackBackoffMin {
		return &ports.FieldError{Field: "nack_backoff_max", Fix: "must not be below nack_backoff_min, e.g. 100ms and 10s"}
	}
	return nil
}

// redactURL is s fit for an error: its password (or, where it does not
// parse as a URL with credentials, the whole of it) replaced.
func redactURL(s string) string {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return "[unparsable URL]"
	case u.User != nil:
		u.User = url.User("xxxxx") // the whole userinfo: a lone username may be a token
		return strings.Replace(u.String(), "xxxxx@", "[redacted]@", 1)
	case strings.Contains(s, "@"):
		return "[redacted]" // user:password@host without a scheme
	}
	return s
}

// ServerList is a list of broker URLs that never prints a password in
// them: String, logs, JSON and configuration dumps show it redacted.
type ServerList []string

// Redacted returns the URLs with their passwords replaced by "xxxxx" (and
// a URL that does not parse, which may hold one, replaced whole).
func (l ServerList) Redacted() []string {
	out := make([]string, len(l))
	for i, s := range l {
		out[i] = redactServer(s)
	}
	return out
}

// String implements fmt.Stringer with the passwords redacted.
func (l ServerList) String() string { return strings.Join(l.Redacted(), ",") }

// MarshalYAML keeps a configuration dump from printing the passwords.
func (l ServerList) MarshalYAML() (any, error) { return l.Redacted(), nil }

// MarshalJSON keeps JSON from printing the passwords.
func (l ServerList) MarshalJSON() ([]byte, error) { return json.Marshal(l.Redacted()) }

// LogValue keeps slog from printing the passwords.
func (l ServerList) LogValue() slog.Value { return slog.StringValue(l.String()) }

// redactServer is s with its password replaced by "xxxxx"; where s does
// not parse, or holds "@" without parsed credentials, it is replaced whole.
func redactServer(s string) string {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return "[unparsable URL]"
	case u.User != nil:
		return u.Redacted()
	case strings.Contains(s, "@"):
		return "[redacted]"
	}
	return s
}

var placeholders = []string{"{service}", "{hostname}", "{conn}", "{n}"}

func checkTemplate(tmpl string) error {
	rest := tmpl
	for _, p := range placeholders {
		rest = strings.ReplaceAll(rest, p, "")
	}
	if strings.ContainsAny(rest, "{}") {
		return fmt.Errorf("%q has an unknown placeholder; use %s", tmpl, strings.Join(placeholders, ", "))
	}
	return nil
}

// clientIDs hands out {n}: the lowest ordinal not held by a live
// connection of this process whose identifier is otherwise the same.
var clientIDs = struct {
	sync.Mutex
	held map[string]map[int]bool
}{held: map[string]map[int]bool{}}

// claimClientID renders the template for conn and returns the identifier
// and the function that releases its {n}.
func (c Config) claimClientID(conn string) (string, func()) {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	base := strings.NewReplacer("{service}", c.Service, "{hostname}", host, "{conn}", conn).Replace(c.ClientID)
	if !strings.Contains(base, "{n}") {
		return base, func() {}
	}
	clientIDs.Lock()
	defer clientIDs.Unlock()
	held := clientIDs.held[base]
	if held == nil {
		held = map[int]bool{}
		clientIDs.held[base] = held
	}
	n := 0
	for held[n] {
		n++
	}
	held[n] = true
	var once sync.Once
	return strings.ReplaceAll(base, "{n}", strconv.Itoa(n)), func() {
		once.Do(func() {
			clientIDs.Lock()
			defer clientIDs.Unlock()
			delete(held, n)
			if len(held) == 0 {
				delete(clientIDs.held, base)
			}
		})
	}
}

// parseQoS reads a QoS option value.
func parseQoS(v string) (byte, error) {
	switch v {
	case "0", "1", "2":
		return v[0] - '0', nil
	}
	return 0, fmt.Errorf("option %s: %q is not a QoS; use 0, 1 or 2", OptionQoS, v)
}

// PublishOptions are an event binding's settings.
type PublishOptions struct {
	QoS       byte
	Retain    bool
	Mandatory bool
}

// ParsePublishOptions reads an event binding's options ("qos", "retain",
// "mandatory")
// over the configured defaults; it rejects unknown keys.
func (c Config) ParsePublishOptions(opts map[string]string) (PublishOptions, error) {
	o := PublishOptions{QoS: byte(c.QoS)}
	for k, v := range opts {
		switch k {
		case OptionQoS:
			q, err := parseQoS(v)
			if err != nil {
				return o, err
			}
			o.QoS = q
		case OptionRetain:
			b, err := strconv.ParseBool(v)
			if err != nil {
				return o, fmt.Errorf("option %s: %q is not true or false", OptionRetain, v)
			}
			o.Retain = b
		case OptionMandatory:
			b, err := strconv.ParseBool(v)
			if err != nil {
				return o, fmt.Errorf("option %s: %q is not true or false", OptionMandatory, v)
			}
			o.Mandatory = b
		default:
			return o, fmt.Errorf("option %q is not an mqtt publish option; use %s, %s or %s", k, OptionQoS, OptionRetain, OptionMandatory)
		}
	}
	return o, nil
}

// SubscriberConfig is one subscriber's settings: one binding. Handler
// fills {conn} in the client ID; a Group subscribes as
// $share/{Group}/{filter}, its members splitting the messages; Options
// take "qos".
type SubscriberConfig = transport.SubscriberConfig

func (c Config) subscriberSettings(s SubscriberConfig) (qos byte, err error) {
	qos = byte(c.QoS)
	for k, v := range s.Options {
		switch k {
		case OptionQoS:
			if qos, err = parseQoS(v); err != nil {
				return 0, err
			}
		default:
			return 0, fmt.Errorf("option %q is not an mqtt subscription option; use %s", k, OptionQoS)
		}
	}
	if err := checkGroup(s.Group); err != nil {
		return 0, err
	}
	if s.Handler == "" {
		return 0, &ports.FieldError{Field: "handler", Fix: "must name the subscriber (it is part of the client ID)"}
	}
	return qos, nil
}

// CheckBindingOptions validates a binding's options without connecting:
// a handler binding's (consume) or an event binding's.
func (c Config) CheckBindingOptions(consume bool, options map[string]string) error {
	if consume {
		_, err := c.subscriberSettings(SubscriberConfig{Handler: "check", Options: options})
		return err
	}
	_, err := c.ParsePublishOptions(options)
	return err
}
