// Package aliyun is the Aliyun IoT Platform server-side subscription
// transport: it consumes the device messages Aliyun pushes over AMQP 1.0
// (github.com/Azure/go-amqp) and hands them to watermill handlers. It is
// consume-only; Aliyun has no publisher side on this interface.
//
// A Transport holds Config.Connections connections, each with one receiver
// link, and feeds every Subscriber made from it: Aliyun pushes all topics of
// a consumer group on one link, and each subscription takes the messages
// whose Aliyun topic (application property "topic") matches its filter.
// See docs/aliyun.md.
package aliyun

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/adapters/transport/secret"
	"github.com/hexmill/hexmill/ports"
)

// Sign methods Aliyun accepts.
const (
	SignHMACSHA1   = "hmacsha1"
	SignHMACSHA256 = "hmacsha256"
	SignHMACMD5    = "hmacmd5"
)

// Config configures the aliyun transport. See docs/aliyun.md for every
// field with its environment variable.
type Config struct {
	// Host is the AMQP endpoint. When empty it is built from
	// IotInstanceID (${iotInstanceId}.amqp.iothub.aliyuncs.com) or, for an
	// old public instance, from UID and RegionID
	// (${uid}.iot-amqp.${regionId}.aliyuncs.com).
	Host string `yaml:"host"`
	// Port is 5671 (AMQPS) by default.
	Port int `yaml:"port"`
	// TLS is on by default; turn it off only for a local broker.
	TLS *bool `yaml:"tls"`
	// AllowPlaintext lets the signed password travel without TLS to a
	// host that is not loopback (refused otherwise); it logs a warning at
	// every start. For a local network only.
	AllowPlaintext bool `yaml:"allow_plaintext"`
	// UID and RegionID build the old public instance's host.
	UID      string `yaml:"uid"`
	RegionID string `yaml:"region_id"`

	AccessKeyID     string        `yaml:"access_key_id"`
	AccessKeySecret secret.String `yaml:"access_key_secret"`
	// SecurityToken switches authentication to STS (authMode=ststoken).
	SecurityToken secret.String `yaml:"security_token"`
	// ConsumerGroupID is the consumer group created in the IoT console.
	ConsumerGroupID string `yaml:"consumer_group_id"`
	// ClientID identifies this client in the console; connection i uses
	// ClientID-i. Placeholders: {service}, {hostname}. Default
	// {service}-{hostname}: one per replica (a pod's host name is its own),
	// and two services on one consumer group do not collide.
	ClientID string `yaml:"client_id"`
	// Service fills {service} in ClientID; the app sets it from the
	// service's name.
	Service string `yaml:"-"`
	// IotInstanceID is empty for the old public instance.
	IotInstanceID string `yaml:"iot_instance_id"`
	// SignMethod is hmacsha1, hmacsha256 or hmacmd5.
	SignMethod string `yaml:"sign_method"`

	// Connections is the number of connections, each with one receiver
	// link (Aliyun pushes up to 1 000 msg/s per connection).
	Connections int `yaml:"connections"`
	// Credit is the link credit per connection: at most this many messages
	// per connection are on their way or waiting for a handler (handlers
	// hold at most their subscription's concurrency more).
	Credit int `yaml:"credit"`
	// IdleTimeout is the connection's idle timeout; go-amqp advertises half
	// of it, which must be within Aliyun's 30..300 s.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// SourceAddress is the receiver link's source: "/queue-name" for
	// Aliyun (which ignores it), "/amq/queue/Q" or "/queue/Q" for
	// RabbitMQ's AMQP 1.0 plugin.
	SourceAddress string `yaml:"source_address"`
	// ConnectTimeout bounds one attempt: dial, authenticate, attach (Aliyun
	// wants all of it within 15 s).
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// StartTimeout bounds how long Start (and so the first Subscribe)
	// waits for every connection to come up.
	StartTimeout time.Duration `yaml:"start_timeout"`
	// Reconnect paces the reconnect attempts.
	Reconnect ReconnectConfig `yaml:"reconnect"`
	// UnmatchedDelay is how long a message no subscription matches is held
	// before it is released back to the broker (a subscription that
	// appears meanwhile still gets it).
	UnmatchedDelay time.Duration `yaml:"unmatched_delay"`
	// SettleTimeout bounds how long Close waits for the dispositions
	// (accepts, releases) still to be sent before it closes the links; a
	// disposition on a lost link returns as soon as the link ends.
	SettleTimeout time.Duration `yaml:"settle_timeout"`
	// StallTimeout is how long a link with credit outstanding may stay
	// silent before its credit is resynchronised with a drain (an idle
	// source costs one drain per StallTimeout); a drain unanswered for as
	// long reconnects.
	StallTimeout time.Duration `yaml:"stall_timeout"`
	// MaxMessageBytes is the largest message a subscriber hands out
	// (bindings may lower or raise it: handlers.<name>.max_message_bytes);
	// a larger one is poisoned with reason too_large. 0 means
	// transport.DefaultMaxMessageBytes (1 MiB).
	MaxMessageBytes int `yaml:"max_message_bytes"`
}

// ReconnectConfig is the backoff between connection attempts.
type ReconnectConfig struct {
	// InitialInterval and MaxInterval bound the exponential backoff with
	// jitter of one connection (Aliyun's demo: 10 ms doubling to 20 s).
	InitialInterval time.Duration `yaml:"initial_interval"`
	MaxInterval     time.Duration `yaml:"max_interval"`
	// MaxAttemptsPerMinute caps the attempts of all connections together:
	// Aliyun allows 100 per consumer group per minute.
	MaxAttemptsPerMinute int `yaml:"max_attempts_per_minute"`
}

// SetDefaults fills the zero values with defaults. It is idempotent.
func (c *Config) SetDefaults() {
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = transport.DefaultMaxMessageBytes
	}
	if c.Port == 0 {
		c.Port = 5671
	}
	if c.TLS == nil {
		on := true
		c.TLS = &on
	}
	if c.SignMethod == "" {
		c.SignMethod = SignHMACSHA1
	}
	if c.ClientID == "" {
		c.ClientID = "{service}-{hostname}"
	}
	if c.Connections == 0 {
		c.Connections = 1
	}
	if c.Credit == 0 {
		c.Credit = 200
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 120 * time.Second
	}
	if c.SourceAddress == "" {
		c.SourceAddress = "/queue-name"
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 15 * time.Second
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = 30 * time.Second
	}
	if c.Reconnect.InitialInterval == 0 {
		c.Reconnect.InitialInterval = 10 * time.Millisecond
	}
	if c.Reconnect.MaxInterval == 0 {
		c.Reconnect.MaxInterval = 20 * time.Second
	}
	if c.Reconnect.MaxAttemptsPerMinute == 0 {
		c.Reconnect.MaxAttemptsPerMinute = 100
	}
	if c.UnmatchedDelay == 0 {
		c.UnmatchedDelay = time.Second
	}
	if c.SettleTimeout == 0 {
		c.SettleTimeout = 10 * time.Second
	}
	if c.StallTimeout == 0 {
		c.StallTimeout = 2 * time.Second
	}
}

// Validate reports the first invalid field, named as in YAML, with the fix.
func (c Config) Validate() error {
	if err := transport.CheckMaxMessageBytes("max_message_bytes", c.MaxMessageBytes); err != nil {
		return err
	}
	switch {
	case c.Host == "" && c.IotInstanceID == "" && (c.UID == "" || c.RegionID == ""):
		return &ports.FieldError{Field: "host", Fix: "must be set, or built from iot_instance_id, or from uid and region_id"}
	case strings.ContainsAny(c.Host, "/: "):
		return &ports.FieldError{Field: "host", Fix: "must be a host name without scheme or port, e.g. iot-06z00abc.amqp.iothub.aliyuncs.com"}
	case c.Port < 1 || c.Port > 65535:
		return &ports.FieldError{Field: "port", Fix: "must be 1..65535, e.g. 5671"}
	case c.AccessKeyID == "":
		return &ports.FieldError{Field: "access_key_id", Fix: "must be set to the AccessKey ID of a RAM user allowed to subscribe"}
	case c.AccessKeySecret == "":
		return &ports.FieldError{Field: "access_key_secret", Fix: "must be set; give it through the environment (<PREFIX>_TRANSPORTS_ALIYUN_ACCESS_KEY_SECRET) rather than the YAML file"}
	case c.ConsumerGroupID == "":
		return &ports.FieldError{Field: "consumer_group_id", Fix: "must be set to the consumer group ID from the IoT console"}
	case c.ClientID == "":
		return &ports.FieldError{Field: "client_id", Fix: "must be set, e.g. the host name; connection i uses client_id-i"}
	case strings.ContainsAny(c.ClientID, "|,="):
		return &ports.FieldError{Field: "client_id", Fix: "must not contain '|', ',' or '='"}
	case c.SignMethod != SignHMACSHA1 && c.SignMethod != SignHMACSHA256 && c.SignMethod != SignHMACMD5:
		return ports.FieldErrorf("sign_method", "%q is not supported; use hmacsha1, hmacsha256 or hmacmd5", c.SignMethod)
	case c.Connections < 1 || c.Connections > 64:
		return &ports.FieldError{Field: "connections", Fix: "must be 1..64"}
	case c.Credit < 1 || c.Credit > 10000:
		return &ports.FieldError{Field: "credit", Fix: "must be 1..10000, e.g. 200 (messages must be settled within Aliyun's 30 s)"}
	case c.IdleTimeout < 60*time.Second || c.IdleTimeout > 600*time.Second:
		return &ports.FieldError{Field: "idle_timeout", Fix: "must be 60s..600s (go-amqp advertises half, Aliyun accepts 30..300 s)"}
	case c.SourceAddress == "":
		return &ports.FieldError{Field: "source_address", Fix: "must be set, e.g. /queue-name"}
	case c.ConnectTimeout <= 0:
		return &ports.FieldError{Field: "connect_timeout", Fix: "must be positive, e.g. 15s"}
	case c.StartTimeout <= 0:
		return &ports.FieldError{Field: "start_timeout", Fix: "must be positive, e.g. 30s"}
	case c.Reconnect.InitialInterval <= 0 || c.Reconnect.MaxInterval < c.Reconnect.InitialInterval:
		return &ports.FieldError{Field: "reconnect.initial_interval", Fix: "must be positive and not above reconnect.max_interval, e.g. 10ms and 20s"}
	case c.Reconnect.MaxAttemptsPerMinute < 1 || c.Reconnect.MaxAttemptsPerMinute > 100:
		return &ports.FieldError{Field: "reconnect.max_attempts_per_minute", Fix: "must be 1..100 (Aliyun refuses more than 100 per consumer group per minute)"}
	case c.UnmatchedDelay < 0:
		return &ports.FieldError{Field: "unmatched_delay", Fix: "must not be negative, e.g. 1s"}
	case c.SettleTimeout <= 0:
		return &ports.FieldError{Field: "settle_timeout", Fix: "must be positive, e.g. 10s"}
	case c.StallTimeout <= 0:
		return &ports.FieldError{Field: "stall_timeout", Fix: "must be positive, e.g. 2s"}
	}
	return c.checkPlaintext()
}

// Endpoint is the host the connections dial.
func (c Config) Endpoint() string {
	switch {
	case c.Host != "":
		return c.Host
	case c.IotInstanceID != "":
		return c.IotInstanceID + ".amqp.iothub.aliyuncs.com"
	default:
		return c.UID + ".iot-amqp." + c.RegionID + ".aliyuncs.com"
	}
}

func (c Config) tls() bool { return c.TLS == nil || *c.TLS }

// address is the dial URL: no credentials in it, they go in SASL options.
func (c Config) address() string {
	scheme := "amqps"
	if !c.tls() {
		scheme = "amqp"
	}
	return fmt.Sprintf("%s://%s:%d", scheme, c.Endpoint(), c.Port)
}

// clientID is the client ID of connection i, its placeholders filled.
func (c Config) clientID(i int) string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	service := c.Service
	if service == "" {
		service = "aliyun"
	}
	id := strings.NewReplacer("{service}", service, "{hostname}", host).Replace(c.ClientID)
	// Aliyun's console and signature take no '|', ',' or '=' (Validate
	// refuses them in the setting; a host name has none).
	return fmt.Sprintf("%s-%d", id, i)
}

// CheckBindingOptions validates a binding's options without connecting:
// the transport consumes only and takes no options.
func (c Config) CheckBindingOptions(consume bool, options map[string]string) error {
	if !consume {
		return errors.New("the aliyun transport consumes only: publish to another transport")
	}
	if len(options) > 0 {
		keys := make([]string, 0, len(options))
		for k := range options {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		return ports.FieldErrorf("options", "%s not known; the aliyun transport takes no binding options", strings.Join(keys, ", "))
	}
	return nil
}
