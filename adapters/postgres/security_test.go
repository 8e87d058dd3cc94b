package postgres

import (
	"crypto/tls"
	"strings"
	"testing"
)

// sslmode disable, allow or prefer to a host that is not loopback is
// refused, naming the setting and both fixes; the default sslmode for such
// a host is verify-full, so that leaving it out is safe.
func TestConfigRefusesPlaintext(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // prefix of the error; "" for valid
	}{
		{"url sslmode disable", Config{URL: "postgres://app@db.example.com/app?sslmode=disable"}, "url: "},
		{"url sslmode prefer", Config{URL: "postgres://app@10.0.0.3/app?sslmode=prefer"}, "url: "},
		{"url sslmode allow", Config{URL: "postgres://app@postgres:5432/app?sslmode=allow"}, "url: "},
		{"url one remote host of two", Config{URL: "postgres://app@127.0.0.1:5432,db.example.com:5432/app?sslmode=disable"}, "url: "},
		{"url host parameter", Config{URL: "postgres://app@127.0.0.1/app?host=db.example.com&sslmode=disable"}, "url: "},
		{"field sslmode disable", Config{Host: "db.example.com", SSLMode: "disable"}, "sslmode: "},
		{"field one remote host of two", Config{Host: "127.0.0.1,db.example.com:5433", SSLMode: "disable"}, "sslmode: "},
		{"field loopback hosts", Config{Host: "127.0.0.1:5432, localhost", SSLMode: "disable"}, ""},
		{"url without sslmode", Config{URL: "postgres://app@db.example.com/app"}, ""},
		{"url verify-full", Config{URL: "postgres://app@db.example.com/app?sslmode=verify-full"}, ""},
		{"url require", Config{URL: "postgres://app@db.example.com/app?sslmode=require"}, ""},
		{"field without sslmode", Config{Host: "db.example.com"}, ""},
		{"loopback disable", Config{URL: "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"}, ""},
		{"localhost disable", Config{Host: "localhost", SSLMode: "disable"}, ""},
		{"unix socket disable", Config{URL: "postgres://app@/app?host=/var/run/postgresql&sslmode=disable"}, ""},
		{"allow_plaintext", Config{URL: "postgres://app@postgres/app?sslmode=disable", AllowPlaintext: true}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Password = "hunter2"
			err := tc.cfg.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) || !strings.Contains(err.Error(), "verify-full") ||
				!strings.Contains(err.Error(), "allow_plaintext: true") || strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("got %v, want %q naming verify-full and allow_plaintext, without the password", err, tc.want)
			}
		})
	}
}

// What pgx is given: verify-full where no sslmode is set for a host that
// is not loopback, the URL as it is otherwise.
func TestDefaultSSLMode(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{URL: "postgres://app@db.example.com/app"}, "verify-full"},
		{Config{URL: "postgres://app@db.example.com/app?sslmode=require"}, "require"},
		{Config{URL: "postgres://postgres@127.0.0.1/test"}, "prefer"}, // pgx's own default
		{Config{Host: "db.example.com"}, "verify-full"},
		{Config{Host: "127.0.0.1,db.example.com"}, "verify-full"},
		{Config{}, "prefer"},
	} {
		pc, err := tc.cfg.withDefaults().poolConfig()
		if err != nil {
			t.Fatal(err)
		}
		// pgx turns sslmode into a TLS config per host and fallbacks:
		// verify-full checks each server's name and has no plaintext
		// fallback; prefer falls back to plaintext; require checks
		// nothing.
		tlsConfs := []*tls.Config{pc.ConnConfig.TLSConfig}
		for _, f := range pc.ConnConfig.Fallbacks {
			tlsConfs = append(tlsConfs, f.TLSConfig)
		}
		var plain, encrypted, unverified int
		for _, tc := range tlsConfs {
			switch {
			case tc == nil:
				plain++
			case tc.InsecureSkipVerify:
				encrypted++
				unverified++
			default:
				encrypted++
			}
		}
		got := "other"
		switch {
		case encrypted == 0:
			got = "disable"
		case plain > 0 && unverified > 0:
			got = "prefer"
		case plain == 0 && unverified == len(tlsConfs):
			got = "require"
		case plain == 0 && unverified == 0:
			got = "verify-full"
		}
		if got != tc.want {
			t.Errorf("%+v: pgx got sslmode %s, want %s", tc.cfg, got, tc.want)
		}
	}
}
