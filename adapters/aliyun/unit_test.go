package aliyun

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/hexmill/hexmill/adapters/transport/secret"
	"github.com/hexmill/hexmill/ports"
)

// opensslHMAC computes base64(HMAC) with the openssl command: a vector
// independent of the adapter's code.
func opensslHMAC(t *testing.T, digest, key, data string) string {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	cmd := exec.Command("sh", "-c", `printf '%s' "$DATA" | openssl dgst -`+digest+` -hmac "$KEY" -binary | openssl base64 -A`)
	cmd.Env = append(cmd.Environ(), "DATA="+data, "KEY="+key)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("openssl: %v", err)
	}
	return strings.TrimSpace(string(out))
}

func TestSignatureAgainstOpenSSL(t *testing.T) {
	now := time.UnixMilli(1_700_000_123_456)
	base := Config{
		AccessKeyID: "LTAI5tExampleAK", AccessKeySecret: "ExampleSecret/+=", ConsumerGroupID: "DEFAULT_GROUP",
		IotInstanceID: "iot-06z00abc",
	}
	for _, tc := range []struct{ method, digest string }{
		{SignHMACSHA1, "sha1"}, {SignHMACSHA256, "sha256"}, {SignHMACMD5, "md5"},
	} {
		t.Run(tc.method, func(t *testing.T) {
			cfg := base
			cfg.SignMethod = tc.method
			cred := sign(cfg, "client-0", now)
			wantUser := "client-0|authMode=aksign,signMethod=" + tc.method + ",consumerGroupId=DEFAULT_GROUP,authId=LTAI5tExampleAK,iotInstanceId=iot-06z00abc,timestamp=1700000123456|"
			if cred.UserName != wantUser {
				t.Errorf("user name\n got %s\nwant %s", cred.UserName, wantUser)
			}
			want := opensslHMAC(t, tc.digest, "ExampleSecret/+=", "authId=LTAI5tExampleAK&timestamp=1700000123456")
			if cred.Password != want {
				t.Errorf("password %s, openssl says %s", cred.Password, want)
			}
			if cred.LogName != cred.UserName {
				t.Errorf("log name %s differs without a token", cred.LogName)
			}
		})
	}
	t.Run("ststoken", func(t *testing.T) {
		cfg := base
		cfg.SignMethod = SignHMACSHA256
		cfg.SecurityToken = "CAIS-token=="
		cred := sign(cfg, "client-1", now)
		wantUser := "client-1|authMode=ststoken,securityToken=CAIS-token==,signMethod=hmacsha256,consumerGroupId=DEFAULT_GROUP,authId=LTAI5tExampleAK,iotInstanceId=iot-06z00abc,timestamp=1700000123456|"
		if cred.UserName != wantUser {
			t.Errorf("user name\n got %s\nwant %s", cred.UserName, wantUser)
		}
		want := opensslHMAC(t, "sha256", "ExampleSecret/+=", "authId=LTAI5tExampleAK&securityToken=CAIS-token==&timestamp=1700000123456")
		if cred.Password != want {
			t.Errorf("password %s, openssl says %s", cred.Password, want)
		}
		if strings.Contains(cred.LogName, "CAIS") || !strings.Contains(cred.LogName, "securityToken=[redacted]") {
			t.Errorf("log name %s shows the token", cred.LogName)
		}
	})
	t.Run("fresh timestamp per dial", func(t *testing.T) {
		a, b := sign(base, "c", now), sign(base, "c", now.Add(time.Millisecond))
		if a.UserName == b.UserName || a.Password == b.Password {
			t.Error("two dials a millisecond apart signed the same")
		}
	})
}

// The client ID defaults to the service and the host: replicas (pods)
// and services on one consumer group get IDs of their own.
func TestDefaultClientID(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Skip(err)
	}
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"default", Config{Service: "fleet"}, "fleet-" + host + "-1"},
		{"no service (the adapter alone)", Config{}, "aliyun-" + host + "-1"},
		{"placeholders", Config{Service: "fleet", ClientID: "{hostname}.{service}"}, host + ".fleet-1"},
		{"fixed", Config{Service: "fleet", ClientID: "prod-a"}, "prod-a-1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.SetDefaults()
			if got := tc.cfg.clientID(1); got != tc.want {
				t.Errorf("clientID(1) = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestConfig(t *testing.T) {
	var c Config
	c.SetDefaults()
	once := c
	c.SetDefaults()
	if fmt.Sprint(once) != fmt.Sprint(c) {
		t.Fatal("SetDefaults is not idempotent")
	}
	if c.Port != 5671 || !c.tls() || c.SourceAddress != "/queue-name" || c.IdleTimeout < 60*time.Second || c.Reconnect.InitialInterval != 10*time.Millisecond || c.Reconnect.MaxInterval != 20*time.Second || c.Reconnect.MaxAttemptsPerMinute != 100 {
		t.Fatalf("defaults %+v", c)
	}
	if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), "host: ") {
		t.Fatalf("Validate() = %v, want host first", err)
	}
	c.IotInstanceID = "iot-1"
	c.AccessKeyID = "ak"
	if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), "access_key_secret: must be set") {
		t.Fatalf("Validate() = %v", err)
	}
	c.AccessKeySecret = "s3cr3t"
	c.ConsumerGroupID, c.ClientID = "g", "host-a"
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Endpoint() != "iot-1.amqp.iothub.aliyuncs.com" || c.address() != "amqps://iot-1.amqp.iothub.aliyuncs.com:5671" {
		t.Fatalf("endpoint %s address %s", c.Endpoint(), c.address())
	}
	old := Config{UID: "123", RegionID: "cn-shanghai"}
	if old.Endpoint() != "123.iot-amqp.cn-shanghai.aliyuncs.com" {
		t.Fatalf("old endpoint %s", old.Endpoint())
	}
	for field, mutate := range map[string]func(*Config){
		"sign_method: ":                       func(c *Config) { c.SignMethod = "sha1" },
		"idle_timeout: ":                      func(c *Config) { c.IdleTimeout = 30 * time.Second },
		"credit: ":                            func(c *Config) { c.Credit = -1 },
		"client_id: ":                         func(c *Config) { c.ClientID = "a|b" },
		"reconnect.max_attempts_per_minute: ": func(c *Config) { c.Reconnect.MaxAttemptsPerMinute = 101 },
	} {
		bad := c
		mutate(&bad)
		if err := bad.Validate(); err == nil || !strings.HasPrefix(err.Error(), field) {
			t.Errorf("Validate() = %v, want it to start with %q", err, field)
		}
	}
	for _, out := range []string{fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c)} {
		if strings.Contains(out, "s3cr3t") {
			t.Fatalf("config print shows the secret: %s", out)
		}
	}
	if _, err := New(Config{AccessKeySecret: secret.String("s3cr3t")}, nil); err == nil || strings.Contains(err.Error(), "s3cr3t") {
		t.Fatalf("New with bad config: %v", err)
	}
}

// The attempt limiter allows max attempts in any sliding minute, whatever
// the number of connections drawing from it (fake clock).
func TestAttemptLimiter(t *testing.T) {
	l := newAttemptLimiter(100, time.Minute)
	t0 := time.Unix(1_700_000_000, 0)
	now := t0
	for i := range 100 {
		if w := l.reserve(now); w != 0 {
			t.Fatalf("attempt %d refused (wait %s)", i, w)
		}
		now = now.Add(100 * time.Millisecond) // 10 s for all 100
	}
	w := l.reserve(now)
	if w <= 0 || now.Add(w) != t0.Add(time.Minute) {
		t.Fatalf("101st attempt: wait %s, want until the first leaves the window", w)
	}
	if w2 := l.reserve(now.Add(w)); w2 != 0 {
		t.Fatalf("after the wait: %s", w2)
	}
	// Over any window of one minute, no more than 100 attempts: simulate
	// 3 connections hammering for 5 minutes.
	l = newAttemptLimiter(100, time.Minute)
	var granted []time.Time
	for now = t0; now.Before(t0.Add(5 * time.Minute)); now = now.Add(10 * time.Millisecond) {
		for range 3 {
			if l.reserve(now) == 0 {
				granted = append(granted, now)
			}
		}
	}
	for i := range granted {
		j := i
		for j < len(granted) && granted[j].Sub(granted[i]) < time.Minute {
			j++
		}
		if j-i > 100 {
			t.Fatalf("%d attempts within a minute from %s", j-i, granted[i].Sub(t0))
		}
	}
	if len(granted) < 500 {
		t.Fatalf("only %d attempts in 5 minutes; the limiter is too strict", len(granted))
	}
}

func TestBackoff(t *testing.T) {
	for _, r := range []float64{0, 0.5, 0.999} {
		b := newBackoff(10*time.Millisecond, 20*time.Second, func() float64 { return r })
		prevCap := time.Duration(0)
		for i := range 20 {
			d := b.next()
			cap := min(10*time.Millisecond<<i, 20*time.Second)
			if d < cap/2 || d > cap {
				t.Fatalf("rand %v attempt %d: %s not in [%s, %s]", r, i, d, cap/2, cap)
			}
			prevCap = cap
		}
		if prevCap != 20*time.Second {
			t.Fatalf("backoff did not reach 20s")
		}
		b.reset()
		if d := b.next(); d > 10*time.Millisecond {
			t.Fatalf("after reset: %s", d)
		}
	}
}

func TestTopics(t *testing.T) {
	for topic, want := range map[string][2]string{
		"/a1B2c3/dev-1/thing/event/property/post": {"a1B2c3", "dev-1"},
		"/as/mqtt/status/a1B2c3/dev.2":            {"a1B2c3", "dev.2"},
		"/sys/a1B2c3/dev3/thing/event/post":       {"a1B2c3", "dev3"},
		"/a1B2c3/dev4/user/update":                {"a1B2c3", "dev4"},
	} {
		pk, dn, ok := ParseTopic(topic)
		if !ok || pk != want[0] || dn != want[1] {
			t.Errorf("ParseTopic(%s) = %s, %s, %v", topic, pk, dn, ok)
		}
	}
	for _, topic := range []string{"", "/", "/as/mqtt/status", "/onlyone"} {
		if _, _, ok := ParseTopic(topic); ok {
			t.Errorf("ParseTopic(%q) parsed", topic)
		}
	}
	if DeviceID("pk", "dev") != "pk.dev" || DeviceID("", "dev") != "" {
		t.Error("DeviceID convention")
	}
}

func aliyunMessage(topic, payload string) *message.Message {
	m := message.NewMessage("id", []byte(payload))
	m.Metadata.Set(ports.MetadataTopic, topic)
	if pk, dn, ok := ParseTopic(topic); ok {
		m.Metadata.Set(MetadataProductKey, pk)
		m.Metadata.Set(MetadataDeviceName, dn)
	}
	m.Metadata.Set(MetadataGenerateTime, "1700000000000")
	return m
}

func TestParsePropertyPost(t *testing.T) {
	cases := map[string]struct {
		payload string
		want    PropertyPost
	}{
		"alink params": {
			`{"id":"1","version":"1.0","params":{"temperature":21.5,"humidity":{"value":40,"time":1700000001000},"label":"x","on":true},"method":"thing.event.property.post"}`,
			PropertyPost{DeviceID: "pk.dev", Properties: map[string]float64{"temperature": 21.5, "humidity": 40, "on": 1}, At: time.UnixMilli(1700000001000).UTC()},
		},
		"subscription items": {
			`{"iotId":"x","productKey":"pk2","deviceName":"d2","gmtCreate":1700000002000,"items":{"Power":{"value":3.5,"time":1700000003000}}}`,
			PropertyPost{DeviceID: "pk2.d2", Properties: map[string]float64{"Power": 3.5}, At: time.UnixMilli(1700000003000).UTC()},
		},
		"no times: generateTime": {
			`{"params":{"t":1}}`,
			PropertyPost{DeviceID: "pk.dev", Properties: map[string]float64{"t": 1}, At: time.UnixMilli(1700000000000).UTC()},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := ParsePropertyPost(aliyunMessage("/pk/dev/thing/event/property/post", tc.payload))
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
	for name, payload := range map[string]string{
		"not json":       `{"params":`,
		"no properties":  `{"id":"1","params":{}}`,
		"no number":      `{"params":{"label":"x"}}`,
		"other method":   `{"params":{"t":1},"method":"thing.service.set"}`,
		"array payload":  `[1,2]`,
		"unknown device": `{"params":{"t":1}}`,
	} {
		topic := "/pk/dev/thing/event/property/post"
		if name == "unknown device" {
			topic = "/weird"
		}
		if _, err := ParsePropertyPost(aliyunMessage(topic, payload)); !errors.Is(err, ports.ErrInvalid) {
			t.Errorf("%s: %v, want ports.ErrInvalid", name, err)
		}
	}
}

func TestParseStatusChange(t *testing.T) {
	got, err := ParseStatusChange(aliyunMessage("/as/mqtt/status/pk/dev", `{"status":"offline","iotId":"x","productKey":"pk","deviceName":"dev","time":"2018-08-31 15:32:28.205","utcTime":"2018-08-31T07:32:28.205Z","lastTime":"2018-08-31 15:32:28.195","utcLastTime":"2018-08-31T07:32:28.195Z","clientIp":"1.2.3.4"}`))
	if err != nil {
		t.Fatal(err)
	}
	want := StatusChange{DeviceID: "pk.dev", Online: false, At: time.Date(2018, 8, 31, 7, 32, 28, 205e6, time.UTC)}
	if got != want {
		t.Fatalf("got %+v want %+v", got, want)
	}
	// time only (UTC+8), device from the topic.
	got, err = ParseStatusChange(aliyunMessage("/as/mqtt/status/pk/dev", `{"status":"online","time":"2018-08-31 15:32:28.205"}`))
	if err != nil {
		t.Fatal(err)
	}
	if !got.At.Equal(want.At) || got.DeviceID != "pk.dev" || !got.Online {
		t.Fatalf("got %+v", got)
	}
	for name, payload := range map[string]string{
		"not json":   `nope`,
		"bad status": `{"status":"asleep","utcTime":"2018-08-31T07:32:28.205Z"}`,
		"no time":    `{"status":"online"}`,
		"bad time":   `{"status":"online","utcTime":"yesterday"}`,
	} {
		if _, err := ParseStatusChange(aliyunMessage("/as/mqtt/status/pk/dev", payload)); !errors.Is(err, ports.ErrInvalid) {
			t.Errorf("%s: %v, want ports.ErrInvalid", name, err)
		}
	}
}
