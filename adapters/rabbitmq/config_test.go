package rabbitmq_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/hexmill/hexmill/adapters/rabbitmq"
)

func TestSetDefaultsIsIdempotent(t *testing.T) {
	cfg := rabbitmq.Config{Queues: []rabbitmq.QueueConfig{{Name: "q"}}, Exchanges: []rabbitmq.ExchangeConfig{{Name: "e", Type: "topic"}}}
	cfg.SetDefaults()
	once := fmt.Sprintf("%+v", cfg)
	cfg.SetDefaults()
	if twice := fmt.Sprintf("%+v", cfg); once != twice {
		t.Fatalf("SetDefaults changed its own result:\n%s\n%s", once, twice)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	if cfg.Queues[0].Type != rabbitmq.QueueQuorum || !*cfg.Publish.Confirm || !*cfg.Publish.Mandatory || !*cfg.Publish.Persistent {
		t.Fatalf("want quorum queues and confirmed, mandatory, persistent publishing by default: %+v", cfg)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		modify func(*rabbitmq.Config)
		want   string // prefix of the error; "" for valid
	}{
		{"defaults", func(*rabbitmq.Config) {}, ""},
		{"bad scheme", func(c *rabbitmq.Config) { c.URL = "http://localhost" }, "url: must start with amqp:// or amqps://"},
		{"port", func(c *rabbitmq.Config) { c.Port = 70000 }, "port: "},
		{"cluster", func(c *rabbitmq.Config) { c.URLs = rabbitmq.URLList{"amqps://a:5671/", "amqps://b:5671/"} }, ""},
		{"cluster, plaintext node", func(c *rabbitmq.Config) { c.URLs = rabbitmq.URLList{"amqps://a:5671/", "amqp://b:5672/"} }, "urls[1]: the user and password would travel unencrypted"},
		{"url and urls", func(c *rabbitmq.Config) { c.URL, c.URLs = "amqp://a/", rabbitmq.URLList{"amqp://b/"} }, "urls: set either url (one node) or urls"},
		{"host and urls", func(c *rabbitmq.Config) { c.Host, c.URLs = "a", rabbitmq.URLList{"amqp://b/"} }, "host: cannot be combined with urls"},
		{"bad node", func(c *rabbitmq.Config) { c.URLs = rabbitmq.URLList{"amqp://a/", "http://b/"} }, "urls[1]: must start with amqp://"},
		{"blocked_unready_after", func(c *rabbitmq.Config) { c.BlockedUnreadyAfter = -time.Second }, "blocked_unready_after: "},
		{"heartbeat", func(c *rabbitmq.Config) { c.Heartbeat = time.Millisecond }, "heartbeat: "},
		{"cert without key", func(c *rabbitmq.Config) { c.TLS.CertFile = "c.pem" }, "tls.cert_file: "},
		{"missing CA file", func(c *rabbitmq.Config) { c.TLS.CAFile = "/nonexistent/ca.pem" }, "tls.ca_file: "},
		{"reconnect", func(c *rabbitmq.Config) { c.Reconnect.MaxInterval = time.Millisecond }, "reconnect.initial_interval: "},
		{"channels", func(c *rabbitmq.Config) { c.Publish.Channels = -1 }, "publish.channels: "},
		{"exchange type", func(c *rabbitmq.Config) { c.Exchanges = []rabbitmq.ExchangeConfig{{Name: "e", Type: "x-delayed"}} }, "exchanges[0].type: "},
		{"reserved exchange", func(c *rabbitmq.Config) { c.Exchanges = []rabbitmq.ExchangeConfig{{Name: "amq.mine", Type: "topic"}} }, "exchanges[0].name: "},
		{"queue type", func(c *rabbitmq.Config) { c.Queues = []rabbitmq.QueueConfig{{Name: "q", Type: "lazy"}} }, "queues[0].type: "},
		{"overflow", func(c *rabbitmq.Config) { c.Queues = []rabbitmq.QueueConfig{{Name: "q", Overflow: "block"}} }, "queues[0].overflow: "},
		{"delivery limit on classic", func(c *rabbitmq.Config) {
			c.Queues = []rabbitmq.QueueConfig{{Name: "q", Type: rabbitmq.QueueClassic, DeliveryLimit: 3}}
		}, "queues[0].delivery_limit: "},
		{"transient quorum", func(c *rabbitmq.Config) {
			f := false
			c.Queues = []rabbitmq.QueueConfig{{Name: "q", Durable: &f}}
		}, "queues[0].durable: "},
		{"dlx key without dlx", func(c *rabbitmq.Config) {
			c.Queues = []rabbitmq.QueueConfig{{Name: "q", DeadLetterRoutingKey: "k"}}
		}, "queues[0].dead_letter_routing_key: "},
		{"binding target", func(c *rabbitmq.Config) { c.Bindings = []rabbitmq.BindingConfig{{Exchange: "e"}} }, "bindings[0].queue: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var cfg rabbitmq.Config
			tc.modify(&cfg)
			cfg.SetDefaults()
			err := cfg.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("Validate: %v; want an error starting %q", err, tc.want)
			}
		})
	}
}

// The password never shows: not in the URL's String, not in a YAML dump,
// not in a connection error.
func TestPasswordIsRedacted(t *testing.T) {
	cfg := rabbitmq.Config{URL: "amqp://app:s3cret-url@127.0.0.1:1/", Password: "s3cret-field"}
	cluster := rabbitmq.Config{URLs: rabbitmq.URLList{"amqp://app:s3cret-1@127.0.0.1:1/", "amqp://app:s3cret-2@127.0.0.1:2/"}}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	out2, err := yaml.Marshal(cluster)
	if err != nil {
		t.Fatal(err)
	}
	js, err := json.Marshal(cluster)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{cfg.URL.String(), string(out), fmt.Sprintf("%v %+v", cfg, cfg),
		cluster.URLs.String(), string(out2), string(js), fmt.Sprintf("%v %+v %s", cluster, cluster, cluster.URLs)} {
		if strings.Contains(s, "s3cret") {
			t.Fatalf("password printed: %s", s)
		}
	}
	c2, err := rabbitmq.New(cluster, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	err = c2.Open(t.Context())
	if err == nil || strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "127.0.0.1:1") || !strings.Contains(err.Error(), "127.0.0.1:2") {
		t.Fatalf("Connect to two closed ports: %v; want an error naming both nodes without the password", err)
	}
	cfg.DialTimeout = 500 * time.Millisecond
	c, err := rabbitmq.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.Open(t.Context())
	if err == nil || strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("Connect to a closed port: %v; want an error naming the host without the password", err)
	}
}

func TestBindingOptions(t *testing.T) {
	var cfg rabbitmq.Config
	if err := cfg.CheckBindingOptions(true, map[string]string{"consumers": "4", "bind_exchange": "events", "routing_key": "devices.#"}); err != nil {
		t.Fatal(err)
	}
	for opts, wantErr := range map[string]string{
		"qos=1":             "options.qos: unknown RabbitMQ subscribe option",
		"consumers=0":       "options.consumers: ",
		"routing_key=x":     "options.routing_key: needs options.bind_exchange",
		"mandatory=perhaps": "",
	} {
		k, v, _ := strings.Cut(opts, "=")
		if wantErr == "" {
			if _, err := rabbitmq.PublishSettings(rabbitmq.PublishConfig{}, map[string]string{k: v}); err == nil || !strings.HasPrefix(err.Error(), "options.mandatory: ") {
				t.Fatalf("publish option %s: %v", opts, err)
			}
			continue
		}
		if err := cfg.CheckBindingOptions(true, map[string]string{k: v}); err == nil || !strings.HasPrefix(err.Error(), wantErr) {
			t.Fatalf("subscribe option %s: %v; want %q", opts, err, wantErr)
		}
	}
}
