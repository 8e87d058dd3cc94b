package app_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/hexmill/hexmill/adapters/postgres"
	"github.com/hexmill/hexmill/ports"
)

// With poison.transport postgres a poisoned message is a row of
// hexmill_dead_letters, counted by the gauge <namespace>_dead_letters; a
// database that stops answering makes the gauge absent from a scrape,
// never the scrape hang.
func TestDeadLettersInPostgres(t *testing.T) {
	pgURL, proxy := proxiedPG(t)
	e, schema := pgEnv(t, pgURL, false)
	e["PGTEST_HTTP_ADDR"] = "127.0.0.1:0"
	e["PGTEST_POISON_TRANSPORT"] = "postgres"
	s := startService(t, pgService(func(context.Context, ports.Publisher, *postgres.DB, ports.Message) error {
		return ports.Invalid(errors.New("bad reading"))
	}), e)
	db := openDB(t, schema)

	if err := s.broker.Publish(inTopic, message.NewMessage("in-1", []byte("device-7"))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the dead letter", func() bool { return countRows(t, db, `SELECT count(*) FROM hexmill_dead_letters`) == 1 })
	letters, err := db.DeadLetters(context.Background(), postgres.DeadLetterFilter{Handler: "test", Reason: "BAD READING"})
	if err != nil {
		t.Fatal(err)
	}
	if len(letters) != 1 {
		t.Fatalf("%d dead letters of handler test with reason bad reading, want 1", len(letters))
	}
	l := letters[0]
	if l.MessageID != "in-1" || string(l.Payload) != "device-7" || l.Attempts != 1 || l.Transport != "memory" ||
		l.Metadata["poisoned_at"] == "" || l.FirstFailed.IsZero() || !l.FirstFailed.Equal(l.LastFailed) {
		t.Fatalf("dead letter %+v", l)
	}

	scrape := func() (int, string, time.Duration) {
		start := time.Now()
		client := http.Client{Timeout: time.Minute}
		resp, err := client.Get("http://" + s.ops.Addr() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), time.Since(start)
	}
	if code, body, _ := scrape(); code != http.StatusOK || !strings.Contains(body, `pgtest_dead_letters{handler_name="test"} 1`) {
		t.Fatalf("/metrics %d without the gauge of 1 dead letter:\n%s", code, body)
	}

	proxy.Stall(true)
	defer proxy.Stall(false) // before the service stops
	code, body, took := scrape()
	if code != http.StatusOK || strings.Contains(body, "pgtest_dead_letters{") || !strings.Contains(body, "go_goroutines") {
		t.Fatalf("/metrics with the database stalled: %d\n%s", code, body)
	}
	if took > 20*time.Second {
		t.Fatalf("/metrics took %s with the database stalled; the count is bounded at 2s", took)
	}
	t.Logf("/metrics with the database stalled: %s", took)
}
