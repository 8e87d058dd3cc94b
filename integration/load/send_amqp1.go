package load

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	amqp "github.com/Azure/go-amqp"
)

// amqp1Link is one AMQP 1.0 connection with one sender link; messages are
// sent unsettled and pipelined (SendWithReceipt), confirmed when the broker
// accepts them.
type amqp1Link struct {
	runID  string
	conn   *amqp.Conn
	sender *amqp.Sender
}

func amqp1Dialer(cfg *SendConfig) dialFunc {
	return func(ctx context.Context, i int) (link, error) {
		u, err := url.Parse(cfg.URL)
		if err != nil {
			return nil, fmt.Errorf("amqp1: url: %w", err)
		}
		dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		conn, err := amqp.Dial(dctx, cfg.URL, &amqp.ConnOptions{
			ContainerID: cfg.ClientIDPrefix + "-" + cfg.RunID + "-" + fmt.Sprint(i),
			IdleTimeout: 60 * time.Second,
		})
		if err != nil {
			return nil, fmt.Errorf("amqp1: connect %s: %w", u.Redacted(), err)
		}
		session, err := conn.NewSession(dctx, nil)
		if err != nil {
			_ = conn.Close()
			return nil, fmt.Errorf("amqp1: session: %w", err)
		}
		sender, err := session.NewSender(dctx, cfg.Address, nil)
		if err != nil {
			_ = conn.Close()
			return nil, fmt.Errorf("amqp1: sender to %s: %w", cfg.Address, err)
		}
		return &amqp1Link{runID: cfg.RunID, conn: conn, sender: sender}, nil
	}
}

func (l *amqp1Link) send(ctx context.Context, m *message) (confirm, error) {
	body, props := aliyunPush(l.runID, m)
	msg := &amqp.Message{
		Header:                &amqp.MessageHeader{Durable: true},
		ApplicationProperties: props,
		Data:                  [][]byte{body},
	}
	receipt, err := l.sender.SendWithReceipt(ctx, msg, nil)
	if err != nil {
		return nil, fmt.Errorf("amqp1: send: %w", err)
	}
	return func(ctx context.Context) error {
		state, err := receipt.Wait(ctx)
		if err != nil {
			return fmt.Errorf("amqp1: confirm: %w", err)
		}
		switch s := state.(type) {
		case *amqp.StateAccepted:
			return nil
		case *amqp.StateRejected:
			if s.Error != nil {
				return fatalError{fmt.Errorf("amqp1: rejected: %w", s.Error)}
			}
			return fatalError{errors.New("amqp1: rejected")}
		default:
			// released or modified: the broker did not take it, send again.
			return fmt.Errorf("amqp1: outcome %T", state)
		}
	}, nil
}

func (l *amqp1Link) close() {
	_ = l.conn.Close()
}
