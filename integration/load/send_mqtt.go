package load

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
)

// mqttLink is one MQTT v5 connection. Each publication runs on a goroutine
// of its own (paho's Publish blocks until the PUBACK); close cancels them
// and waits for them.
type mqttLink struct {
	runID string
	topic string
	cm    *autopaho.ConnectionManager
	ctx   context.Context // cancelled by close
	stop  context.CancelFunc
	wg    sync.WaitGroup
}

func mqttDialer(cfg *SendConfig) dialFunc {
	return func(ctx context.Context, i int) (link, error) {
		u, err := url.Parse(cfg.URL)
		if err != nil {
			return nil, fmt.Errorf("mqtt: url: %w", err)
		}
		if strings.ContainsAny(cfg.Topic, "+#") {
			return nil, fatalError{fmt.Errorf("mqtt: topic %q has a wildcard", cfg.Topic)}
		}
		user, pass := cfg.Username, cfg.Password
		if user == "" && u.User != nil {
			user = u.User.Username()
			pass, _ = u.User.Password()
		}
		lctx, stop := context.WithCancel(context.Background())
		connErr := make(chan error, 1)
		cc := autopaho.ClientConfig{
			ServerUrls:                    []*url.URL{u},
			KeepAlive:                     30,
			CleanStartOnInitialConnection: true,
			ConnectRetryDelay:             time.Second,
			ConnectTimeout:                10 * time.Second,
			ConnectUsername:               user,
			ConnectPassword:               []byte(pass),
			// A failed connection is reported to the publisher, which
			// closes this one and dials anew. Its publications in flight
			// end now: paho drops a lost connection's pending PUBACKs
			// without a word, and each would otherwise wait out paho's
			// packet timeout (10 s) before it is published again.
			OnConnectionDown: func() bool {
				stop()
				return false
			},
			OnConnectError: func(err error) {
				select {
				case connErr <- err:
				default:
				}
			},
			ClientConfig: paho.ClientConfig{
				ClientID: cfg.ClientIDPrefix + "-" + cfg.RunID + "-" + strconv.Itoa(i),
			},
		}
		cm, err := autopaho.NewConnection(lctx, cc)
		if err != nil {
			stop()
			return nil, fmt.Errorf("mqtt: connect: %w", err)
		}
		l := &mqttLink{runID: cfg.RunID, topic: cfg.Topic, cm: cm, ctx: lctx, stop: stop}
		actx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		up := make(chan error, 1)
		go func() { up <- cm.AwaitConnection(actx) }()
		select {
		case err = <-up:
		case err = <-connErr:
			cancel()
			<-up
		}
		if err != nil {
			l.close()
			return nil, fmt.Errorf("mqtt: connect %s: %w", u.Redacted(), err)
		}
		return l, nil
	}
}

func (l *mqttLink) send(_ context.Context, m *message) (confirm, error) {
	p := &paho.Publish{
		QoS:     1,
		Topic:   strings.ReplaceAll(l.topic, "{device_id}", DeviceID(l.runID, m.device)),
		Payload: telemetryJSON(l.runID, m),
		Properties: &paho.PublishProperties{
			ContentType: "application/json",
		},
	}
	done := make(chan error, 1)
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		// Bound by the link, not by ctx: when ctx ends, the publisher
		// still collects the PUBACKs in flight, until close.
		resp, err := l.cm.Publish(l.ctx, p)
		switch {
		case err != nil && resp != nil && resp.ReasonCode >= 0x80 && !transientReason(resp.ReasonCode):
			err = fatalError{fmt.Errorf("mqtt: publish to %s refused: %w", p.Topic, err)}
		case err == nil && resp != nil && resp.ReasonCode == reasonNoMatchingSubscribers:
			err = fmt.Errorf("mqtt: publish to %s: %w", p.Topic, errNoSubscribers)
		}
		done <- err
	}()
	return func(ctx context.Context) error {
		select {
		case err := <-done:
			if err != nil {
				return fmt.Errorf("mqtt: publish: %w", err)
			}
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}, nil
}

// reasonNoMatchingSubscribers is the PUBACK reason code 0x10: the broker
// took the message and dropped it, since no subscription matched.
const reasonNoMatchingSubscribers = 0x10

// transientReason reports whether a PUBACK reason code may pass: 0x89
// server busy, 0x97 quota exceeded.
func transientReason(code byte) bool {
	return code == 0x89 || code == 0x97
}

func (l *mqttLink) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = l.cm.Disconnect(ctx) // sends DISCONNECT when connected
	l.stop()
	l.wg.Wait()
	<-l.cm.Done()
}
