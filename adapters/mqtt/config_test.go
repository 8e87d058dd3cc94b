package mqtt

import (
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	valid := func() Config { c := Config{}; c.SetDefaults(); return c }
	cases := []struct {
		name  string
		edit  func(*Config)
		field string // "" for valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"no servers", func(c *Config) { c.Servers = nil }, "servers: "},
		{"bad scheme", func(c *Config) { c.Servers = []string{"http://x:1"} }, "servers: "},
		{"credentials in URL", func(c *Config) { c.Servers = []string{"mqtt://u:hunter2@x:1883"} }, "servers: "},
		{"client id without conn", func(c *Config) { c.ClientID = "{service}-{n}" }, "client_id: "},
		{"unknown placeholder", func(c *Config) { c.ClientID = "{conn}-{pod}" }, "client_id: "},
		{"password without user", func(c *Config) { c.Password = "hunter2" }, "username: "},
		{"cert without key", func(c *Config) { c.TLS.CertFile = "x.pem" }, "tls.cert_file: "},
		{"missing CA file", func(c *Config) { c.TLS.CAFile = "/nonexistent/ca.pem" }, "tls.ca_file: "},
		{"fractional keepalive", func(c *Config) { c.KeepAlive = 1500 * time.Millisecond }, "keepalive: "},
		{"negative session expiry", func(c *Config) { c.SessionExpiry = -time.Second }, "session_expiry: "},
		{"receive maximum too high", func(c *Config) { c.ReceiveMaximum = 70000 }, "receive_maximum: "},
		{"qos 3", func(c *Config) { c.QoS = 3 }, "qos: "},
		{"reconnect max below min", func(c *Config) { c.ReconnectMax = time.Millisecond }, "reconnect_max: "},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.edit(&c)
			err := c.Validate()
			if tc.field == "" {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tc.field) {
				t.Fatalf("got %v, want an error starting with %q", err, tc.field)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("error prints the password: %v", err)
			}
		})
	}
}

func TestSetDefaultsIdempotent(t *testing.T) {
	var a Config
	a.SetDefaults()
	b := a
	b.SetDefaults()
	if a.ClientID != b.ClientID || a.ReceiveMaximum != b.ReceiveMaximum || len(a.Servers) != len(b.Servers) {
		t.Fatalf("second SetDefaults changed the config: %+v vs %+v", a, b)
	}
}

func TestClientIDOrdinals(t *testing.T) {
	c := Config{ClientID: "svc-{conn}-{n}"}
	a, releaseA := c.claimClientID("h")
	b, releaseB := c.claimClientID("h")
	if a != "svc-h-0" || b != "svc-h-1" {
		t.Fatalf("got %s, %s", a, b)
	}
	releaseA()
	again, releaseAgain := c.claimClientID("h")
	if again != "svc-h-0" {
		t.Fatalf("a released ordinal is not reused: %s", again)
	}
	releaseB()
	releaseAgain()
}

func TestOptions(t *testing.T) {
	var c Config
	c.SetDefaults()
	if o, err := c.ParsePublishOptions(map[string]string{"qos": "2", "retain": "true"}); err != nil || o.QoS != 2 || !o.Retain {
		t.Fatalf("got %+v %v", o, err)
	}
	for _, opts := range []map[string]string{{"qos": "3"}, {"retain": "maybe"}, {"priority": "1"}} {
		if _, err := c.ParsePublishOptions(opts); err == nil {
			t.Errorf("%v: want an error", opts)
		}
	}
	for _, sc := range []SubscriberConfig{
		{Handler: "h", Options: map[string]string{"retain": "true"}},
		{Handler: "h", Group: "a/b"},
		{Handler: "h", Group: "a+"},
		{Handler: ""},
	} {
		if _, err := c.subscriberSettings(sc); err == nil {
			t.Errorf("%+v: want an error", sc)
		}
	}
}

func TestTopics(t *testing.T) {
	for _, topic := range []string{"$share/g/a", "a/+/b", "a/#", "", "a/\xff"} {
		if checkPublishTopic(topic) == nil {
			t.Errorf("publish to %q accepted", topic)
		}
	}
	for _, f := range []string{"a/b+", "a/#/b", "$share/g/a", "", "a/\xc3/+"} {
		if checkFilter(f) == nil {
			t.Errorf("filter %q accepted", f)
		}
	}
	if got := subscriptionFilter("g", "tele/+/data"); got != "$share/g/tele/+/data" {
		t.Errorf("got %s", got)
	}
}
