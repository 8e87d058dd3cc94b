package mqtt

// QueuedBytes is the payload bytes waiting in the subscriber's queues
// (for tests).
func (s *Subscriber) QueuedBytes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.routes {
		n += r.bytes
	}
	return n
}
