package domain_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hexmill/hexmill/domain"
	"github.com/hexmill/hexmill/ports"
)

var (
	t1 = time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)
	t2 = t1.Add(time.Minute)
	t3 = t2.Add(time.Minute)
)

// statusNow is the service's clock in the status tests: after t3.
var statusNow = t3.Add(time.Hour)

// newStatusHandler is the handler with the default configuration and the
// clock at statusNow.
func newStatusHandler(store domain.DeviceStore, pub ports.Publisher) *domain.DeviceStatusHandler {
	return domain.NewDeviceStatusHandler(domain.DefaultConfig(), store, pub, fixedClock{statusNow})
}

func statusMsg(id, device, status string, at time.Time) ports.Message {
	p := `{"status":"` + status + `"`
	if device != "" {
		p += `,"device_id":"` + device + `"`
	}
	if !at.IsZero() {
		p += `,"at":"` + at.Format(time.RFC3339Nano) + `"`
	}
	p += "}"
	return ports.Message{Metadata: ports.Metadata{ID: id, Topic: "devices.status"}, Payload: []byte(p)}
}

func changed(device string, online bool, at time.Time) domain.DeviceStatusChanged {
	return domain.DeviceStatusChanged{DeviceID: device, Online: online, At: at}
}

func TestDeviceStatusHandlerName(t *testing.T) {
	h := newStatusHandler(newFakeStore(), &fakePublisher{})
	if got := h.Name(); got != domain.DeviceStatusHandlerName {
		t.Fatalf("Name() = %q, want %q", got, domain.DeviceStatusHandlerName)
	}
	var _ ports.Handler = h
}

func TestDeviceStatusChanges(t *testing.T) {
	type step struct {
		msg  ports.Message
		want []domain.DeviceStatusChanged // published by this step
	}
	tests := []struct {
		name  string
		steps []step
		// final is the stored status of d1 after the last step.
		final domain.DeviceStatus
	}{
		{
			name:  "first report publishes",
			steps: []step{{statusMsg("1", "d1", "online", t1), []domain.DeviceStatusChanged{changed("d1", true, t1)}}},
			final: domain.DeviceStatus{DeviceID: "d1", Online: true, Since: t1},
		},
		{
			name:  "first report offline publishes too",
			steps: []step{{statusMsg("1", "d1", "offline", t1), []domain.DeviceStatusChanged{changed("d1", false, t1)}}},
			final: domain.DeviceStatus{DeviceID: "d1", Online: false, Since: t1},
		},
		{
			name: "same status again does not publish",
			steps: []step{
				{statusMsg("1", "d1", "online", t1), []domain.DeviceStatusChanged{changed("d1", true, t1)}},
				{statusMsg("2", "d1", "online", t2), nil},
			},
			final: domain.DeviceStatus{DeviceID: "d1", Online: true, Since: t2},
		},
		{
			name: "change publishes",
			steps: []step{
				{statusMsg("1", "d1", "online", t1), []domain.DeviceStatusChanged{changed("d1", true, t1)}},
				{statusMsg("2", "d1", "offline", t2), []domain.DeviceStatusChanged{changed("d1", false, t2)}},
				{statusMsg("3", "d1", "online", t3), []domain.DeviceStatusChanged{changed("d1", true, t3)}},
			},
			final: domain.DeviceStatus{DeviceID: "d1", Online: true, Since: t3},
		},
		{
			name: "older reordered report is ignored",
			steps: []step{
				{statusMsg("1", "d1", "online", t1), []domain.DeviceStatusChanged{changed("d1", true, t1)}},
				{statusMsg("3", "d1", "online", t3), nil},
				{statusMsg("2", "d1", "offline", t2), nil},
			},
			final: domain.DeviceStatus{DeviceID: "d1", Online: true, Since: t3},
		},
		{
			name: "report with the same time as the stored one is ignored",
			steps: []step{
				{statusMsg("1", "d1", "online", t1), []domain.DeviceStatusChanged{changed("d1", true, t1)}},
				{statusMsg("2", "d1", "offline", t1), nil},
			},
			final: domain.DeviceStatus{DeviceID: "d1", Online: true, Since: t1},
		},
		{
			name: "redelivery of the same report is ignored",
			steps: []step{
				{statusMsg("1", "d1", "offline", t1), []domain.DeviceStatusChanged{changed("d1", false, t1)}},
				{statusMsg("2", "d1", "online", t2), []domain.DeviceStatusChanged{changed("d1", true, t2)}},
				{statusMsg("2", "d1", "online", t2), nil},
				{statusMsg("2", "d1", "online", t2), nil},
			},
			final: domain.DeviceStatus{DeviceID: "d1", Online: true, Since: t2},
		},
		{
			name: "devices are independent",
			steps: []step{
				{statusMsg("1", "d1", "online", t2), []domain.DeviceStatusChanged{changed("d1", true, t2)}},
				{statusMsg("2", "d2", "online", t1), []domain.DeviceStatusChanged{changed("d2", true, t1)}},
			},
			final: domain.DeviceStatus{DeviceID: "d1", Online: true, Since: t2},
		},
		{
			name: "device_id from the attribute",
			steps: []step{{
				ports.Message{
					Metadata: ports.Metadata{ID: "1", Attributes: map[string]string{domain.AttrDeviceID: "d1"}},
					Payload:  []byte(`{"status":"online","at":"` + t1.Format(time.RFC3339) + `"}`),
				},
				[]domain.DeviceStatusChanged{changed("d1", true, t1)},
			}},
			final: domain.DeviceStatus{DeviceID: "d1", Online: true, Since: t1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := newFakeStore()
			pub := &fakePublisher{}
			h := newStatusHandler(store, pub)
			for i, s := range tt.steps {
				before := len(pub.published())
				if err := h.Handle(context.Background(), s.msg); err != nil {
					t.Fatalf("step %d (%s): Handle() error = %v, want nil", i, s.msg.Payload, err)
				}
				got := pub.published()[before:]
				if len(got) != len(s.want) {
					t.Fatalf("step %d (%s): published %+v, want %+v", i, s.msg.Payload, got, s.want)
				}
				for j := range got {
					g, ok := got[j].(domain.DeviceStatusChanged)
					if !ok {
						t.Fatalf("step %d: event %d is %T, want domain.DeviceStatusChanged", i, j, got[j])
					}
					if g.DeviceID != s.want[j].DeviceID || g.Online != s.want[j].Online || !g.At.Equal(s.want[j].At) {
						t.Errorf("step %d: event %d = %+v, want %+v", i, j, g, s.want[j])
					}
					if g.EventType() != domain.DeviceStatusChangedType {
						t.Errorf("step %d: EventType() = %q, want %q", i, g.EventType(), domain.DeviceStatusChangedType)
					}
				}
			}
			st, ok := store.get("d1")
			if !ok {
				t.Fatal("store has no status for d1")
			}
			if st.DeviceID != tt.final.DeviceID || st.Online != tt.final.Online || !st.Since.Equal(tt.final.Since) {
				t.Errorf("stored status = %+v, want %+v", st, tt.final)
			}
		})
	}
}

// A publish failure must not be forgotten: the handler returns the error
// (the message is retried) and the retry publishes again.
func TestDeviceStatusPublishFailureIsRetried(t *testing.T) {
	tests := []struct {
		name  string
		prior []ports.Message // handled successfully first
		msg   ports.Message   // fails once, then is retried
		want  domain.DeviceStatusChanged
	}{
		{
			name: "first report",
			msg:  statusMsg("1", "d1", "online", t1),
			want: changed("d1", true, t1),
		},
		{
			name:  "change",
			prior: []ports.Message{statusMsg("1", "d1", "online", t1)},
			msg:   statusMsg("2", "d1", "offline", t2),
			want:  changed("d1", false, t2),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := newFakeStore()
			pub := &fakePublisher{}
			h := newStatusHandler(store, pub)
			ctx := context.Background()
			for _, m := range tt.prior {
				if err := h.Handle(ctx, m); err != nil {
					t.Fatalf("prior Handle() error = %v", err)
				}
			}
			before := len(pub.published())

			brokerDown := errors.New("broker down")
			pub.setFail(brokerDown)
			err := h.Handle(ctx, tt.msg)
			if !errors.Is(err, brokerDown) {
				t.Fatalf("Handle() with a failing publisher = %v, want the publisher's error", err)
			}
			if errors.Is(err, ports.ErrInvalid) {
				t.Fatalf("publisher error %v is marked invalid; it must be retried", err)
			}
			if st, _ := store.get("d1"); st.Since.Equal(tt.want.At) {
				t.Fatalf("status saved although its event was not published: %+v", st)
			}

			pub.setFail(nil)
			if err := h.Handle(ctx, tt.msg); err != nil {
				t.Fatalf("retry Handle() error = %v, want nil", err)
			}
			got := pub.published()[before:]
			if len(got) != 1 {
				t.Fatalf("retry published %+v, want exactly %+v", got, tt.want)
			}
			if g := got[0].(domain.DeviceStatusChanged); g.DeviceID != tt.want.DeviceID || g.Online != tt.want.Online || !g.At.Equal(tt.want.At) {
				t.Errorf("retry published %+v, want %+v", g, tt.want)
			}
			// The retry of a message that has now succeeded changes nothing.
			if err := h.Handle(ctx, tt.msg); err != nil {
				t.Fatalf("redelivery Handle() error = %v", err)
			}
			if n := len(pub.published()) - before; n != 1 {
				t.Errorf("redelivery after success published again: %d events, want 1", n)
			}
		})
	}
}

func TestDeviceStatusStoreErrors(t *testing.T) {
	storeDown := errors.New("store down")
	tests := []struct {
		name        string
		getErr      error
		saveErr     error
		wantPublish bool
	}{
		{"get fails before anything is published", storeDown, nil, false},
		// Publish comes first: a save failure makes the message come back
		// and publish again (a duplicate, never a loss).
		{"save fails after publishing", nil, storeDown, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := newFakeStore()
			store.getErr, store.saveErr = tt.getErr, tt.saveErr
			pub := &fakePublisher{}
			h := newStatusHandler(store, pub)
			err := h.Handle(context.Background(), statusMsg("1", "d1", "online", t1))
			if !errors.Is(err, storeDown) {
				t.Fatalf("Handle() error = %v, want the store's error", err)
			}
			if errors.Is(err, ports.ErrInvalid) {
				t.Errorf("store error %v is marked invalid; it must be retried", err)
			}
			if got := len(pub.published()) > 0; got != tt.wantPublish {
				t.Errorf("published = %v, want %v", got, tt.wantPublish)
			}
		})
	}
}

func TestDeviceStatusInvalid(t *testing.T) {
	tests := []struct {
		name    string
		payload string
		attrs   map[string]string
		wantMsg []string
	}{
		{"unknown status", `{"device_id":"d1","status":"sleeping","at":"2024-05-01T10:00:00Z"}`, nil, []string{`status "sleeping" is neither online nor offline`}},
		{"status in upper case", `{"device_id":"d1","status":"ONLINE","at":"2024-05-01T10:00:00Z"}`, nil, []string{`status "ONLINE"`}},
		{"missing status", `{"device_id":"d1","at":"2024-05-01T10:00:00Z"}`, nil, []string{`status ""`}},
		{"missing at", `{"device_id":"d1","status":"online"}`, nil, []string{"at is missing"}},
		{"missing device", `{"status":"online","at":"2024-05-01T10:00:00Z"}`, nil, []string{"device_id is missing"}},
		{"missing device, empty attribute", `{"status":"online","at":"2024-05-01T10:00:00Z"}`, map[string]string{domain.AttrDeviceID: ""}, []string{"device_id is missing"}},
		{"every problem at once", `{}`, nil, []string{"device_id is missing", "neither online nor offline", "at is missing"}},
		{"status is a bool", `{"device_id":"d1","status":true,"at":"2024-05-01T10:00:00Z"}`, nil, []string{"decode", "status"}},
		{"at is a number", `{"device_id":"d1","status":"online","at":1714557600}`, nil, []string{"decode"}},
		{"unknown field", `{"device_id":"d1","status":"online","at":"2024-05-01T10:00:00Z","battery":3}`, nil, []string{`unknown field "battery"`}},
		{"trailing garbage", `{"device_id":"d1","status":"online","at":"2024-05-01T10:00:00Z"}garbage`, nil, []string{"trailing data"}},
		{"not JSON", `online`, nil, []string{"decode"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := newFakeStore()
			pub := &fakePublisher{}
			h := newStatusHandler(store, pub)
			err := h.Handle(context.Background(), ports.Message{Metadata: ports.Metadata{ID: "1", Attributes: tt.attrs}, Payload: []byte(tt.payload)})
			if err == nil {
				t.Fatal("Handle() error = nil, want an invalid-input error")
			}
			if !errors.Is(err, ports.ErrInvalid) {
				t.Errorf("errors.Is(%v, ports.ErrInvalid) = false, want true", err)
			}
			for _, s := range tt.wantMsg {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
			if n := len(pub.published()); n != 0 {
				t.Errorf("published %d events for invalid input, want 0", n)
			}
			if len(store.statuses) != 0 {
				t.Errorf("stored %v for invalid input, want nothing", store.statuses)
			}
		})
	}
}

// fakeTx stands for the transaction of an idempotent binding: the fake
// store does not use it, the handler only looks whether there is one.
type fakeTx struct{}

func (fakeTx) Exec(context.Context, string, ...any) (int64, error) {
	return 0, errors.New("fakeTx: not a database")
}

func (fakeTx) QueryRow(context.Context, string, ...any) ports.Row { return nil }

// storeWatcher is a publisher that records, at each publish, what the
// store held for the event's device.
type storeWatcher struct {
	fakePublisher
	store *fakeStore
	seen  []domain.DeviceStatus
}

func (w *storeWatcher) Publish(ctx context.Context, events ...ports.Event) error {
	for _, e := range events {
		st, _ := w.store.get(e.(domain.DeviceStatusChanged).DeviceID)
		w.seen = append(w.seen, st)
	}
	return w.fakePublisher.Publish(ctx, events...)
}

// In a transaction the status is saved before its event is published (the
// device's row is written before the event enters the outbox), and a
// failure of either is returned, for the transaction to roll back.
func TestDeviceStatusInTransaction(t *testing.T) {
	storeDown := errors.New("store down")
	outboxDown := errors.New("outbox down")
	tests := []struct {
		name     string
		prior    []ports.Message
		msg      ports.Message
		saveErr  error
		pubErr   error
		wantErr  error
		want     []domain.DeviceStatusChanged
		wantSeen bool // the publisher saw the new status stored
	}{
		{name: "first report", msg: statusMsg("1", "d1", "online", t1), want: []domain.DeviceStatusChanged{changed("d1", true, t1)}, wantSeen: true},
		{name: "change", prior: []ports.Message{statusMsg("1", "d1", "online", t1)}, msg: statusMsg("2", "d1", "offline", t2), want: []domain.DeviceStatusChanged{changed("d1", false, t2)}, wantSeen: true},
		{name: "same status: saved, not published", prior: []ports.Message{statusMsg("1", "d1", "online", t1)}, msg: statusMsg("2", "d1", "online", t2)},
		{name: "older report: nothing", prior: []ports.Message{statusMsg("2", "d1", "online", t2)}, msg: statusMsg("1", "d1", "offline", t1)},
		{name: "save fails: nothing published", msg: statusMsg("1", "d1", "online", t1), saveErr: storeDown, wantErr: storeDown},
		{name: "publish fails: the error rolls back", msg: statusMsg("1", "d1", "online", t1), pubErr: outboxDown, wantErr: outboxDown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := newFakeStore()
			pub := &storeWatcher{store: store}
			h := newStatusHandler(store, pub)
			ctx := ports.WithTx(context.Background(), fakeTx{})
			for _, m := range tt.prior {
				if err := h.Handle(ctx, m); err != nil {
					t.Fatalf("prior Handle() error = %v", err)
				}
			}
			before := len(pub.published())
			pub.seen = nil
			store.saveErr = tt.saveErr
			pub.setFail(tt.pubErr)

			err := h.Handle(ctx, tt.msg)
			if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("Handle() error = %v, want %v", err, tt.wantErr)
			}
			if errors.Is(err, ports.ErrInvalid) {
				t.Fatalf("Handle() error %v is marked invalid; it must be retried", err)
			}
			if tt.saveErr != nil && pub.calls > 0 {
				t.Errorf("published although the save failed")
			}
			got := pub.published()[before:]
			if len(got) != len(tt.want) {
				t.Fatalf("published %+v, want %+v", got, tt.want)
			}
			for i, g := range got {
				g := g.(domain.DeviceStatusChanged)
				if g.DeviceID != tt.want[i].DeviceID || g.Online != tt.want[i].Online || !g.At.Equal(tt.want[i].At) {
					t.Errorf("event %d = %+v, want %+v", i, g, tt.want[i])
				}
			}
			if tt.wantSeen {
				if len(pub.seen) != 1 || !pub.seen[0].Since.Equal(tt.want[0].At) {
					t.Errorf("at publish the store held %+v, want the new status saved first", pub.seen)
				}
			}
		})
	}
}

// A device reports for itself only: a payload device_id that contradicts
// the topic's is invalid, and so is a report timed further ahead than
// clock_skew, which would hide the device's next reports until then. A
// device whose clock is ahead by less is fine.
func TestDeviceStatusRefusesWhatItCannotTrust(t *testing.T) {
	skew := domain.DefaultConfig().ClockSkew
	onTopic := func(m ports.Message, device string) ports.Message {
		m.Attributes = map[string]string{domain.AttrDeviceID: device}
		return m
	}
	tests := []struct {
		name    string
		msg     ports.Message
		invalid string // "" when valid
	}{
		{"payload contradicts the topic", onTopic(statusMsg("1", "d2", "online", t1), "d1"), `device_id "d2" in the payload contradicts the topic's "d1"`},
		{"payload repeats the topic", onTopic(statusMsg("1", "d1", "online", t1), "d1"), ""},
		{"at beyond clock_skew", statusMsg("1", "d1", "online", statusNow.Add(skew+time.Second)), "clock_skew"},
		{"at within clock_skew", statusMsg("1", "d1", "online", statusNow.Add(skew)), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := newFakeStore()
			err := newStatusHandler(store, &fakePublisher{}).Handle(context.Background(), tt.msg)
			if tt.invalid == "" {
				if err != nil {
					t.Fatalf("Handle() error = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ports.ErrInvalid) || !strings.Contains(err.Error(), tt.invalid) {
				t.Fatalf("Handle() error = %v, want ports.Invalid naming %q", err, tt.invalid)
			}
			if _, ok := store.get("d1"); ok {
				t.Error("the refused report was stored")
			}
			if _, ok := store.get("d2"); ok {
				t.Error("the refused report was stored")
			}
		})
	}
}

// One report from a clock far ahead cannot freeze a device's status: it
// is refused, and the device's next, correctly timed, report changes the
// status.
func TestDeviceStatusFutureReportDoesNotFreeze(t *testing.T) {
	store := newFakeStore()
	pub := &fakePublisher{}
	h := newStatusHandler(store, pub)
	ctx := context.Background()
	if err := h.Handle(ctx, statusMsg("1", "d1", "online", statusNow.Add(24*time.Hour))); !errors.Is(err, ports.ErrInvalid) {
		t.Fatalf("report a day ahead: %v, want ports.Invalid", err)
	}
	if err := h.Handle(ctx, statusMsg("2", "d1", "offline", statusNow)); err != nil {
		t.Fatal(err)
	}
	if st, ok := store.get("d1"); !ok || st.Online || !st.Since.Equal(statusNow) {
		t.Fatalf("stored %+v, want d1 offline since %s", st, statusNow)
	}
}
