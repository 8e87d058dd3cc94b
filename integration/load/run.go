package load

import (
	"context"
	"errors"
)

// RunConfig is a generator and a checker of one run.
type RunConfig struct {
	Send  SendConfig
	Check CheckConfig
}

// Run starts the checker, sends, waits for the alerts and reports. The
// run ID is Send.RunID (generated when empty), also for the checker. The
// report is valid also with an error (a send stopped early reports what it
// had sent).
func Run(ctx context.Context, cfg RunConfig) (Report, error) {
	if cfg.Send.RunID == "" {
		cfg.Send.RunID = NewRunID()
	}
	cfg.Check.RunID = cfg.Send.RunID
	chk, err := NewChecker(ctx, cfg.Check)
	if err != nil {
		return Report{RunID: cfg.Send.RunID, Transport: cfg.Send.Transport}, err
	}
	sent, sendErr := Send(ctx, cfg.Send)
	report, waitErr := chk.Wait(ctx, sent)
	return report, errors.Join(sendErr, waitErr, chk.Close())
}
