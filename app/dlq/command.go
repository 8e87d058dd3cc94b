package dlq

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/hexmill/hexmill/adapters/postgres"
	"github.com/hexmill/hexmill/adapters/transport"
	"github.com/hexmill/hexmill/app/config"
	"github.com/hexmill/hexmill/app/runtime"
)

// Exit codes of Run, as app.Main's.
const (
	ExitOK     = 0
	ExitFailed = 1
	ExitUsage  = 2
)

// Env is what the command works with: the service's configuration, its
// transports (opened only when needed) and its database (prepared, not
// opened; nil when PostgreSQL is off).
type Env struct {
	Config  config.Config
	Openers []runtime.Opener
	DB      *postgres.DB
	Stdout  io.Writer
	Stderr  io.Writer
}

// Usage is the command's help.
const Usage = `usage: <service> dlq <command> [flags]

Dead letters are the messages the service poisoned, where poison.transport
keeps them: a RabbitMQ queue (poison.topic) or PostgreSQL (postgres).

commands:
  list                   list dead letters: id, handler, reason, attempts,
                         first and last failure, size
  show ID                print one dead letter's metadata and payload
  replay ID... | --all   send dead letters back to their handler's binding,
         | filter flags  with their message ID and metadata and a replay
                         marker; each leaves the DLQ once its republish
                         was confirmed
  purge --all | filter   delete dead letters

filter flags (list, replay, purge):
  --handler NAME         only this handler's
  --reason TEXT          only those whose reason contains TEXT (any case)
  --older-than DURATION  only those last failed longer ago, e.g. 24h
  --newer-than DURATION  only those last failed more recently, e.g. 1h
  --all                  replay or purge every dead letter
  --json                 list and show print JSON

  --max N                every command: read at most N dead letters
                         (default 100000): on RabbitMQ the messages taken
                         from the queue, selected or not; on PostgreSQL
                         the rows selected. With more, list says it is
                         partial; show, replay and purge stop with an
                         error once they handled those N
`

// usageErr is a mistake in the command line: exit status 2.
type usageErr struct{ msg string }

func (e usageErr) Error() string { return e.msg }

func usageError(msg string) error { return usageErr{msg} }

// options is a command line read.
type options struct {
	command string
	filter  Filter
	json    bool
}

func parse(args []string) (options, error) {
	var o options
	if len(args) == 0 {
		return o, usageError("no command; use list, show, replay or purge")
	}
	o.command = args[0]
	switch o.command {
	case "list", "show", "replay", "purge":
	case "-h", "-help", "--help", "help":
		return o, flag.ErrHelp
	default:
		return o, usageError(fmt.Sprintf("%q is not a dlq command; use list, show, replay or purge", o.command))
	}
	fs := flag.NewFlagSet("dlq "+o.command, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.filter.Handler, "handler", "", "")
	fs.StringVar(&o.filter.Reason, "reason", "", "")
	fs.DurationVar(&o.filter.OlderThan, "older-than", 0, "")
	fs.DurationVar(&o.filter.NewerThan, "newer-than", 0, "")
	fs.BoolVar(&o.filter.All, "all", false, "")
	fs.BoolVar(&o.json, "json", false, "")
	fs.IntVar(&o.filter.Max, "max", DefaultMax, "")
	rest := args[1:]
	var ids []string
	for {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return o, err
			}
			return o, usageError(fmt.Sprintf("dlq %s: %v", o.command, err))
		}
		if fs.NArg() == 0 {
			break
		}
		ids = append(ids, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	f := &o.filter
	switch {
	case f.OlderThan < 0 || f.NewerThan < 0:
		return o, usageError("--older-than and --newer-than take a positive duration, e.g. 24h")
	case f.OlderThan > 0 && f.NewerThan > 0 && f.OlderThan >= f.NewerThan:
		return o, usageError("--older-than must be shorter than --newer-than, or nothing matches")
	case f.Max < 1:
		return o, usageError(fmt.Sprintf("--max takes a positive number of dead letters, e.g. %d", DefaultMax))
	}
	switch o.command {
	case "list":
		if len(ids) > 0 {
			return o, usageError("dlq list takes no ID; use dlq show ID")
		}
	case "show":
		if len(ids) != 1 || !f.empty() || f.All {
			return o, usageError("dlq show takes one ID (as dlq list prints it) and no filter")
		}
	case "replay":
		if f.All && (len(ids) > 0 || !f.empty()) {
			return o, usageError("dlq replay: --all with an ID or a filter; give one or the other")
		}
		if len(ids) == 0 && f.empty() && !f.All {
			return o, usageError("dlq replay: say what to replay: IDs, a filter (--handler, --reason, --older-than, --newer-than) or --all")
		}
	case "purge":
		if len(ids) > 0 {
			return o, usageError("dlq purge takes no ID; select with --handler, --reason, --older-than, --newer-than or --all")
		}
		if f.All && !f.empty() {
			return o, usageError("dlq purge: --all with a filter; give one or the other")
		}
		if f.empty() && !f.All {
			return o, usageError("dlq purge: say what to purge: a filter (--handler, --reason, --older-than, --newer-than) or --all")
		}
	}
	o.filter.IDs = ids
	return o, nil
}

// Run runs the dlq command args (without "dlq") and returns its exit
// status. Mistakes in the command line or a poison target that keeps no
// readable dead letters are exit status 2.
func Run(ctx context.Context, args []string, env Env) int {
	o, err := parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(env.Stdout, Usage)
		return ExitOK
	}
	if err == nil {
		err = run(ctx, o, env)
	}
	var ue usageErr
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ue):
		fmt.Fprintf(env.Stderr, "%s: %v (see dlq --help)\n", env.Config.Service, err)
		return ExitUsage
	default:
		fmt.Fprintf(env.Stderr, "%s: dlq %s: %v\n", env.Config.Service, o.command, err)
		return ExitFailed
	}
}

func run(ctx context.Context, o options, env Env) (err error) {
	transports := map[string]transport.Transport{}
	open := func(ctx context.Context, name string) (transport.Transport, error) {
		if t, ok := transports[name]; ok {
			return t, nil
		}
		for _, op := range env.Openers {
			if op.Name == name {
				t, err := op.Open(ctx)
				if err != nil {
					return nil, fmt.Errorf("open transport %s: %w", name, err)
				}
				transports[name] = t
				return t, nil
			}
		}
		return nil, fmt.Errorf("transport %q is not part of this build", name)
	}
	defer func() {
		for _, name := range slices.Sorted(maps.Keys(transports)) {
			_ = transports[name].Close()
		}
	}()
	store, err := openStore(ctx, env, open)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := store.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	switch o.command {
	case "list":
		// What list prints, up to --max of them; not their payloads.
		var letters []Letter
		err := store.List(ctx, o.filter, func(l Letter) bool {
			l.Metadata, l.Payload = nil, nil
			letters = append(letters, l)
			return true
		})
		var capped maxError
		if err != nil && !errors.As(err, &capped) {
			return err
		}
		if err := printList(env.Stdout, letters, o.json); err != nil {
			return err
		}
		if capped.max > 0 {
			fmt.Fprintf(env.Stderr, "%s: dlq list: the list is partial: %v\n", env.Config.Service, capped)
		}
		return nil
	case "show":
		var shown *Letter
		err := store.List(ctx, o.filter, func(l Letter) bool {
			shown = &l
			return false
		})
		switch {
		case shown != nil:
			return printShow(env.Stdout, *shown, o.json)
		case err != nil:
			return fmt.Errorf("dead letter %s not found: %w", o.filter.IDs[0], err)
		}
		return fmt.Errorf("no dead letter %s (dlq list prints their IDs)", o.filter.IDs[0])
	case "replay":
		s := &sender{cfg: env.Config, open: open, pubs: map[string]message.Publisher{}, seen: map[string]bool{}}
		defer s.Close()
		n, err := store.Replay(ctx, o.filter, s.send)
		fmt.Fprintf(env.Stdout, "replayed %d dead letters\n", n)
		return err
	default:
		n, err := store.Purge(ctx, o.filter)
		fmt.Fprintf(env.Stdout, "purged %d dead letters\n", n)
		return err
	}
}

// openStore opens where poison.transport keeps dead letters.
func openStore(ctx context.Context, env Env, open func(context.Context, string) (transport.Transport, error)) (Store, error) {
	p := env.Config.Poison
	switch p.Transport {
	case config.PoisonPostgres:
		if env.DB == nil {
			return nil, usageError("poison.transport is postgres but PostgreSQL is off: set postgres.url")
		}
		if err := env.DB.Open(); err != nil {
			return nil, err
		}
		if err := env.DB.Migrate(ctx, postgres.FrameworkComponent, postgres.Migrations()); err != nil {
			_ = env.DB.Close()
			return nil, fmt.Errorf("postgres: %w", err)
		}
		return postgresStore{db: env.DB}, nil
	case config.TransportRabbitMQ:
		if ex := p.Options["exchange"]; ex != "" {
			return nil, usageError(fmt.Sprintf("poison publishes to exchange %q: dlq reads the queue named poison.topic on the default exchange; poison to the queue itself (drop poison.options.exchange)", ex))
		}
		t, err := open(ctx, config.TransportRabbitMQ)
		if err != nil {
			return nil, err
		}
		return openRabbit(ctx, t, p.Topic)
	case config.TransportMemory:
		return nil, usageError("poison.transport is memory: dead letters live in the service's process only and this command cannot reach them; poison to rabbitmq or postgres to keep them")
	default:
		return nil, usageError(fmt.Sprintf("poison.transport is %s, which this command cannot read back; poison to rabbitmq (a queue) or postgres (a table) to work with dead letters", p.Transport))
	}
}

func printList(w io.Writer, letters []Letter, asJSON bool) error {
	if asJSON {
		out := make([]Letter, len(letters))
		for i, l := range letters {
			l.Metadata, l.Payload = nil, nil
			out[i] = l
		}
		return json.NewEncoder(w).Encode(out)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tHANDLER\tREASON\tATTEMPTS\tFIRST FAILURE\tLAST FAILURE\tSIZE")
	for _, l := range letters {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%d\n", l.ID, l.Handler, oneLine(l.Reason, 80), l.Attempts,
			l.First.UTC().Format(time.RFC3339), l.Last.UTC().Format(time.RFC3339), l.Size)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "%d dead letters\n", len(letters))
	return err
}

func printShow(w io.Writer, l Letter, asJSON bool) error {
	if asJSON {
		return json.NewEncoder(w).Encode(l)
	}
	fmt.Fprintf(w, "id:             %s\nmessage id:     %s\nhandler:        %s\ntopic:          %s\ntransport:      %s\nreason:         %s\nattempts:       %d\nfirst failure:  %s\nlast failure:   %s\nsize:           %d\nmetadata:\n",
		l.ID, l.MessageID, l.Handler, l.Topic, l.Transport, l.Reason, l.Attempts, l.First.UTC().Format(time.RFC3339Nano), l.Last.UTC().Format(time.RFC3339Nano), l.Size)
	for _, k := range slices.Sorted(maps.Keys(l.Metadata)) {
		fmt.Fprintf(w, "  %s: %s\n", k, l.Metadata[k])
	}
	if utf8.Valid(l.Payload) {
		_, err := fmt.Fprintf(w, "payload:\n%s\n", l.Payload)
		return err
	}
	_, err := fmt.Fprintf(w, "payload (binary, %d bytes, hex):\n%x\n", len(l.Payload), l.Payload)
	return err
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		return s[:n-3] + "..."
	}
	return s
}
