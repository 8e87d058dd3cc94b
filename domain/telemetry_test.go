package domain_test

import (
	"context"
	"errors"
	"math"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hexmill/hexmill/domain"
	"github.com/hexmill/hexmill/ports"
)

// The fakes below are shared by the domain tests. The domain sees only
// ports, so its tests do too: no adapter is imported here.

// fakePublisher records what it is asked to publish; while fail is set it
// refuses and records nothing.
type fakePublisher struct {
	mu     sync.Mutex
	fail   error
	events []ports.Event
	calls  int
}

var _ ports.Publisher = (*fakePublisher)(nil)

func (p *fakePublisher) Publish(_ context.Context, events ...ports.Event) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls++
	if p.fail != nil {
		return p.fail
	}
	p.events = append(p.events, events...)
	return nil
}

func (p *fakePublisher) setFail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fail = err
}

func (p *fakePublisher) published() []ports.Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]ports.Event(nil), p.events...)
}

// fixedClock always tells the same time.
type fixedClock struct{ t time.Time }

var _ ports.Clock = fixedClock{}

func (c fixedClock) Now() time.Time { return c.t }

// fakeStore is a DeviceStore in a map, with the contract of
// domain.DeviceStore; getErr and saveErr make it fail.
type fakeStore struct {
	mu       sync.Mutex
	statuses map[string]domain.DeviceStatus
	getErr   error
	saveErr  error
}

var _ domain.DeviceStore = (*fakeStore)(nil)

func newFakeStore() *fakeStore { return &fakeStore{statuses: map[string]domain.DeviceStatus{}} }

func (s *fakeStore) Get(_ context.Context, id string) (domain.DeviceStatus, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.getErr != nil {
		return domain.DeviceStatus{}, false, s.getErr
	}
	st, ok := s.statuses[id]
	return st, ok, nil
}

func (s *fakeStore) SaveIfNewer(_ context.Context, st domain.DeviceStatus) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.saveErr != nil {
		return false, s.saveErr
	}
	if prev, ok := s.statuses[st.DeviceID]; ok && !st.Since.After(prev.Since) {
		return false, nil
	}
	s.statuses[st.DeviceID] = st
	return true, nil
}

func (s *fakeStore) get(id string) (domain.DeviceStatus, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.statuses[id]
	return st, ok
}

var (
	now       = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	reportAt  = time.Date(2024, 5, 1, 11, 59, 30, 0, time.UTC)
	reportAtS = "2024-05-01T11:59:30Z"
)

func msg(payload string, attrs map[string]string) ports.Message {
	return ports.Message{
		Metadata: ports.Metadata{ID: "m-1", Topic: "devices.telemetry", Attributes: attrs},
		Payload:  []byte(payload),
	}
}

func testThresholds() domain.Config {
	return domain.Config{Thresholds: map[string]float64{"temperature": 80, "humidity": 95, "pressure": 1100}}
}

func TestTelemetryHandlerName(t *testing.T) {
	h := domain.NewTelemetryHandler(domain.DefaultConfig(), &fakePublisher{}, fixedClock{now})
	if got := h.Name(); got != domain.TelemetryHandlerName {
		t.Fatalf("Name() = %q, want %q", got, domain.TelemetryHandlerName)
	}
	var _ ports.Handler = h
}

func TestTelemetryAlerts(t *testing.T) {
	tests := []struct {
		name    string
		payload string
		attrs   map[string]string
		want    []ports.Event
	}{
		{
			name:    "above threshold alerts",
			payload: `{"device_id":"d1","readings":{"temperature":80.5},"at":"` + reportAtS + `"}`,
			want:    []ports.Event{domain.AlertRaised{DeviceID: "d1", Metric: "temperature", Value: 80.5, Threshold: 80, At: reportAt}},
		},
		{
			name:    "below threshold does not alert",
			payload: `{"device_id":"d1","readings":{"temperature":20},"at":"` + reportAtS + `"}`,
		},
		{
			name:    "at threshold does not alert",
			payload: `{"device_id":"d1","readings":{"temperature":80},"at":"` + reportAtS + `"}`,
		},
		{
			name:    "negative value below threshold",
			payload: `{"device_id":"d1","readings":{"temperature":-40},"at":"` + reportAtS + `"}`,
		},
		{
			name:    "several readings give several alerts in metric order",
			payload: `{"device_id":"d1","readings":{"temperature":99,"pressure":1200,"humidity":96,"co2":9000},"at":"` + reportAtS + `"}`,
			want: []ports.Event{
				domain.AlertRaised{DeviceID: "d1", Metric: "humidity", Value: 96, Threshold: 95, At: reportAt},
				domain.AlertRaised{DeviceID: "d1", Metric: "pressure", Value: 1200, Threshold: 1100, At: reportAt},
				domain.AlertRaised{DeviceID: "d1", Metric: "temperature", Value: 99, Threshold: 80, At: reportAt},
			},
		},
		{
			name:    "mixed readings alert only above threshold",
			payload: `{"device_id":"d1","readings":{"temperature":81,"humidity":10},"at":"` + reportAtS + `"}`,
			want:    []ports.Event{domain.AlertRaised{DeviceID: "d1", Metric: "temperature", Value: 81, Threshold: 80, At: reportAt}},
		},
		{
			name:    "unknown metric never alerts",
			payload: `{"device_id":"d1","readings":{"co2":1e300},"at":"` + reportAtS + `"}`,
		},
		{
			name:    "device_id from the attribute",
			payload: `{"readings":{"temperature":90},"at":"` + reportAtS + `"}`,
			attrs:   map[string]string{domain.AttrDeviceID: "from-topic"},
			want:    []ports.Event{domain.AlertRaised{DeviceID: "from-topic", Metric: "temperature", Value: 90, Threshold: 80, At: reportAt}},
		},
		{
			name:    "device_id in the payload may repeat the attribute",
			payload: `{"device_id":"from-topic","readings":{"temperature":90},"at":"` + reportAtS + `"}`,
			attrs:   map[string]string{domain.AttrDeviceID: "from-topic"},
			want:    []ports.Event{domain.AlertRaised{DeviceID: "from-topic", Metric: "temperature", Value: 90, Threshold: 80, At: reportAt}},
		},
		{
			name:    "clock used when at is missing",
			payload: `{"device_id":"d1","readings":{"temperature":90}}`,
			want:    []ports.Event{domain.AlertRaised{DeviceID: "d1", Metric: "temperature", Value: 90, Threshold: 80, At: now}},
		},
		{
			name:    "time zone of at is kept",
			payload: `{"device_id":"d1","readings":{"temperature":90},"at":"2024-05-01T19:59:30+08:00"}`,
			want:    []ports.Event{domain.AlertRaised{DeviceID: "d1", Metric: "temperature", Value: 90, Threshold: 80, At: time.Date(2024, 5, 1, 19, 59, 30, 0, time.FixedZone("", 8*3600))}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pub := &fakePublisher{}
			h := domain.NewTelemetryHandler(testThresholds(), pub, fixedClock{now})
			if err := h.Handle(context.Background(), msg(tt.payload, tt.attrs)); err != nil {
				t.Fatalf("Handle() error = %v, want nil", err)
			}
			got := pub.published()
			if len(got) != len(tt.want) {
				t.Fatalf("published %d events %+v, want %d %+v", len(got), got, len(tt.want), tt.want)
			}
			for i := range got {
				g, ok := got[i].(domain.AlertRaised)
				if !ok {
					t.Fatalf("event %d is %T, want domain.AlertRaised", i, got[i])
				}
				w := tt.want[i].(domain.AlertRaised)
				if !g.At.Equal(w.At) {
					t.Errorf("event %d At = %v, want %v", i, g.At, w.At)
				}
				g.At, w.At = time.Time{}, time.Time{}
				if g != w {
					t.Errorf("event %d = %+v, want %+v", i, g, w)
				}
				if g.EventType() != domain.AlertRaisedType {
					t.Errorf("event %d EventType() = %q, want %q", i, g.EventType(), domain.AlertRaisedType)
				}
			}
			if len(tt.want) == 0 && pub.calls != 0 {
				t.Errorf("Publish called %d times with nothing to publish, want 0", pub.calls)
			}
			if len(tt.want) > 0 && pub.calls != 1 {
				t.Errorf("Publish called %d times, want once with every alert", pub.calls)
			}
		})
	}
}

func TestTelemetryInvalid(t *testing.T) {
	tests := []struct {
		name    string
		payload string
		attrs   map[string]string
		// wantMsg are substrings the error must contain: it names the problem.
		wantMsg []string
	}{
		{"missing device_id", `{"readings":{"temperature":1}}`, nil, []string{"device_id is missing"}},
		{"empty device_id attribute", `{"readings":{"temperature":1}}`, map[string]string{domain.AttrDeviceID: ""}, []string{"device_id is missing"}},
		{"device_id contradicts the topic", `{"device_id":"d2","readings":{"temperature":1}}`, map[string]string{domain.AttrDeviceID: "d1"}, []string{`device_id "d2" in the payload contradicts the topic's "d1"`}},
		{"empty readings", `{"device_id":"d1","readings":{}}`, nil, []string{"readings is empty"}},
		{"no readings", `{"device_id":"d1"}`, nil, []string{"readings is empty"}},
		{"null readings", `{"device_id":"d1","readings":null}`, nil, []string{"readings is empty"}},
		{"empty metric name", `{"device_id":"d1","readings":{"":1}}`, nil, []string{"empty metric name"}},
		{"every problem at once", `{}`, nil, []string{"device_id is missing", "readings is empty"}},
		{"null document", `null`, nil, []string{"device_id is missing", "readings is empty"}},
		{"reading is a string", `{"device_id":"d1","readings":{"temperature":"hot"}}`, nil, []string{"decode", "readings"}},
		{"readings is a list", `{"device_id":"d1","readings":[1,2]}`, nil, []string{"decode", "readings"}},
		{"device_id is a number", `{"device_id":42,"readings":{"temperature":1}}`, nil, []string{"decode", "device_id"}},
		{"at is not a time", `{"device_id":"d1","readings":{"temperature":1},"at":"yesterday"}`, nil, []string{"decode", "yesterday"}},
		{"unknown field", `{"device_id":"d1","readings":{"temperature":1},"temp":1}`, nil, []string{"decode", `unknown field "temp"`}},
		{"trailing garbage", `{"device_id":"d1","readings":{"temperature":1}} xyz`, nil, []string{"trailing data"}},
		{"second document", `{"device_id":"d1","readings":{"temperature":1}} {}`, nil, []string{"trailing data"}},
		{"trailing closing brace", `{"device_id":"d1","readings":{"temperature":1}}}`, nil, []string{"trailing data"}},
		{"trailing closing bracket", `{"device_id":"d1","readings":{"temperature":1}}]`, nil, []string{"trailing data"}},
		{"not JSON", `temperature=90`, nil, []string{"decode", "invalid character"}},
		{"truncated JSON", `{"device_id":"d1","readings":{`, nil, []string{"decode"}},
		{"empty payload", ``, nil, []string{"decode", "empty"}},
		{"a JSON array", `[]`, nil, []string{"decode"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pub := &fakePublisher{}
			h := domain.NewTelemetryHandler(testThresholds(), pub, fixedClock{now})
			err := h.Handle(context.Background(), msg(tt.payload, tt.attrs))
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
			if pub.calls != 0 {
				t.Errorf("Publish called %d times for invalid input, want 0", pub.calls)
			}
		})
	}
}

func TestTelemetryPublishError(t *testing.T) {
	tests := []struct {
		name    string
		payload string
		wantErr bool
	}{
		{"alert to publish returns the error", `{"device_id":"d1","readings":{"temperature":90}}`, true},
		{"nothing to publish ignores the publisher", `{"device_id":"d1","readings":{"temperature":10}}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			brokerDown := errors.New("broker down")
			pub := &fakePublisher{fail: brokerDown}
			h := domain.NewTelemetryHandler(testThresholds(), pub, fixedClock{now})
			err := h.Handle(context.Background(), msg(tt.payload, nil))
			if !tt.wantErr {
				if err != nil {
					t.Fatalf("Handle() error = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, brokerDown) {
				t.Fatalf("Handle() error = %v, want the publisher's error", err)
			}
			if errors.Is(err, ports.ErrInvalid) {
				t.Errorf("publisher error %v is marked invalid; it must be retried", err)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     domain.Config
		wantErr string // "" for valid
	}{
		{"default", domain.DefaultConfig(), ""},
		{"zero value", domain.Config{}, ""},
		{"empty map", domain.Config{Thresholds: map[string]float64{}}, ""},
		{"negative and zero thresholds", domain.Config{Thresholds: map[string]float64{"a": -10, "b": 0}}, ""},
		{"NaN", domain.Config{Thresholds: map[string]float64{"temperature": math.NaN()}}, "thresholds.temperature: must be a finite number"},
		{"+Inf", domain.Config{Thresholds: map[string]float64{"humidity": math.Inf(1)}}, "thresholds.humidity: must be a finite number"},
		{"-Inf", domain.Config{Thresholds: map[string]float64{"x": math.Inf(-1)}}, "thresholds.x: must be a finite number"},
		{"first bad metric in order", domain.Config{Thresholds: map[string]float64{"z": math.NaN(), "a": math.NaN(), "m": 1}}, "thresholds.a:"},
		{"empty metric name", domain.Config{Thresholds: map[string]float64{"": 1}}, "metric name must not be empty"},
		{"empty metric name with NaN", domain.Config{Thresholds: map[string]float64{"": math.NaN()}}, "metric name must not be empty"},
		{"negative clock_skew", domain.Config{ClockSkew: -time.Second}, "clock_skew: must be a positive duration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want an error containing %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Validate() = %q, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestDefaultConfig(t *testing.T) {
	want := map[string]float64{"temperature": 80, "humidity": 95}
	if got := domain.DefaultConfig().Thresholds; !reflect.DeepEqual(got, want) {
		t.Fatalf("DefaultConfig().Thresholds = %v, want %v", got, want)
	}
	// Each call returns its own map: changing one must not change the next.
	a := domain.DefaultConfig()
	a.Thresholds["temperature"] = 1
	if got := domain.DefaultConfig().Thresholds["temperature"]; got != 80 {
		t.Fatalf("DefaultConfig() shares its map: temperature = %v after changing a copy", got)
	}
}
