package mqtt

// Queued is how many messages wait in the subscriber's queues, arrived and
// not handed out (for tests).
func (s *Subscriber) Queued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.routes {
		n += len(r.queue)
	}
	return n
}
