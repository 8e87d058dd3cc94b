package postgres

import (
	"testing"
)

// A host list reaches pgx as its hosts, each with its own port or Port,
// and target_session_attrs=read-write makes pgx skip a standby.
func TestConfigHosts(t *testing.T) {
	type hp struct {
		host string
		port uint16
	}
	tests := []struct {
		name      string
		cfg       Config
		want      []hp
		readWrite bool
	}{
		{"one host", Config{Host: "db", Port: 5433}, []hp{{"db", 5433}}, false},
		{"host list, Port for those without one", Config{Host: "db1, db2:5434,[::1]", Port: 5433, TargetSessionAttrs: "read-write"},
			[]hp{{"db1", 5433}, {"db2", 5434}, {"::1", 5433}}, true},
		{"url", Config{URL: "postgres://app@db1:5432,db2:5433/app?target_session_attrs=read-write", Host: "ignored"},
			[]hp{{"db1", 5432}, {"db2", 5433}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			pc, err := tt.cfg.withDefaults().poolConfig()
			if err != nil {
				t.Fatal(err)
			}
			got := []hp{{pc.ConnConfig.Host, pc.ConnConfig.Port}}
			for _, f := range pc.ConnConfig.Fallbacks {
				got = append(got, hp{f.Host, f.Port})
			}
			// pgx adds a fallback without TLS per host for sslmode=prefer.
			got = dedup(got)
			if len(got) != len(tt.want) {
				t.Fatalf("hosts %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("hosts %v, want %v", got, tt.want)
				}
			}
			if rw := pc.ConnConfig.ValidateConnect != nil; rw != tt.readWrite {
				t.Errorf("a connection is validated: %v, want %v (target_session_attrs)", rw, tt.readWrite)
			}
		})
	}
}

func dedup[T comparable](s []T) []T {
	var out []T
	for _, v := range s {
		if len(out) == 0 || out[len(out)-1] != v {
			out = append(out, v)
		}
	}
	return out
}
