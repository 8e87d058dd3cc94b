package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hexmill/hexmill/integration"
	"github.com/hexmill/hexmill/integration/load"
)

func TestMain(m *testing.M) { os.Exit(integration.WithBrokers(m).Run()) }

func TestUsage(t *testing.T) {
	for _, args := range [][]string{nil, {"nope"}, {"check"}, {"send", "-bogus"}} {
		var out, errOut bytes.Buffer
		if code := run(context.Background(), args, &out, &errOut); code != 2 {
			t.Errorf("%q: exit %d, want 2 (%s)", args, code, errOut.String())
		}
	}
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"send", "-transport", "carrier-pigeon", "-url", "x"}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "carrier-pigeon") {
		t.Errorf("bad transport: exit %d, stderr %q", code, errOut.String())
	}
}

// TestSendThenCheck sends to a queue and checks the same queue, with
// alerts standing in for the service's: the commands' plumbing end to end.
func TestSendThenCheck(t *testing.T) {
	url := integration.RabbitMQURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	runID := load.NewRunID()
	queue := "hexmill-load-cmd-" + runID
	ch := integration.RabbitMQChannel(t, url)
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if _, err := ch.QueueDelete(queue, false, false, false); err != nil {
			t.Errorf("delete %s: %v", queue, err)
		}
	}()

	var out, errOut bytes.Buffer
	code := run(ctx, []string{"send", "-transport", "rabbitmq", "-url", url, "-run-id", runID, "-count", "50", "-routing-key", queue}, &out, &errOut)
	if code != 0 || !strings.Contains(out.String(), "50 confirmed") {
		t.Fatalf("send: exit %d\n%s%s", code, out.String(), errOut.String())
	}
	// The queue now holds telemetry, not alerts: check reads 50 strangers
	// and reports all 50 lost, exit 1.
	out.Reset()
	errOut.Reset()
	code = run(ctx, []string{"check", "-sink", url, "-sink-queue", queue, "-run-id", runID, "-count", "50", "-quiet", "200ms"}, &out, &errOut)
	t.Logf("check: exit %d\n%s%s", code, out.String(), errOut.String())
	if code != 1 || !strings.Contains(out.String(), "lost 50") || !strings.Contains(out.String(), "| ignored / malformed | 50 / 0 |") {
		t.Fatalf("check: exit %d, want 1 with 50 lost and 50 ignored", code)
	}
}
