// Package queuedconn holds the socket an adapter puts under an AMQP
// client (amqp091-go, go-amqp) whose writes are one system call per
// frame: Write queues the bytes and returns, and one goroutine per
// connection hands the queue to the socket, so that what is queued while
// a write is under way leaves in the next write, together.
//
// No message is less safe for it: a write that returned never meant that
// the broker had the message (its confirm or settlement does), and a
// write that fails closes the socket, so the client's reader sees the
// connection end and fails what it still awaits.
package queuedconn

import (
	"net"
	"sync"
	"time"
)

// Bounds of a connection's write queue.
const (
	// queueBytes is how many bytes Write queues before it waits for
	// the socket, so that TCP's push-back (a broker that stopped reading,
	// as RabbitMQ does under a resource alarm) still reaches the client.
	queueBytes = 256 << 10
	// closeFlushWait bounds how long Close lets the queue drain (say,
	// the close handshake's last frame) before it closes the socket.
	closeFlushWait = time.Second
)

// Conn is a socket whose writes are queued. Reads, deadlines and the
// addresses are the socket's own; a deadline reaches the write under way.
type Conn struct {
	net.Conn

	mu      sync.Mutex
	ready   sync.Cond // the writer waits: bytes queued, or closing
	room    sync.Cond // Write waits: room in the queue, or an error
	queue   []byte    // bytes Write accepted, not yet handed to the socket
	spare   []byte    // the writer's buffer, swapped with queue
	err     error     // the socket's write error; every later Write returns it
	closing bool
	done    chan struct{} // closed when the writer returned
}

// New returns conn with its writes queued and starts its writer, which
// Close stops.
func New(conn net.Conn) *Conn {
	q := &Conn{Conn: conn, done: make(chan struct{})}
	q.ready.L = &q.mu
	q.room.L = &q.mu
	go q.write()
	return q
}

// Write queues p. It waits while the queue holds queueBytes or more
// (one p of any size is taken into an empty queue) and returns the
// socket's error once a write failed.
func (q *Conn) Write(p []byte) (int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.err == nil && !q.closing && len(q.queue) > 0 && len(q.queue)+len(p) > queueBytes {
		q.room.Wait()
	}
	switch {
	case q.err != nil:
		return 0, q.err
	case q.closing:
		return 0, net.ErrClosed
	}
	q.queue = append(q.queue, p...)
	q.ready.Signal()
	return len(p), nil
}

// write hands the queue to the socket until Close emptied it or a write
// failed; then it closes the socket, so that the connection's reader ends
// too.
func (q *Conn) write() {
	defer close(q.done)
	q.mu.Lock()
	for {
		for len(q.queue) == 0 && !q.closing {
			q.ready.Wait()
		}
		if len(q.queue) == 0 {
			break // closing, and all is written
		}
		buf := q.queue
		q.queue = q.spare[:0]
		q.room.Broadcast()
		q.mu.Unlock()
		_, err := q.Conn.Write(buf)
		q.mu.Lock()
		q.spare = buf
		if err != nil {
			q.err = err
			q.queue = nil
			q.room.Broadcast()
			break
		}
	}
	q.mu.Unlock()
	_ = q.Conn.Close()
}

// Close lets the writer hand what is queued to the socket, for at most
// closeFlushWait, closes the socket and waits for the writer.
func (q *Conn) Close() error {
	q.mu.Lock()
	already := q.closing
	q.closing = true
	q.ready.Signal()
	q.room.Broadcast()
	q.mu.Unlock()
	if already {
		<-q.done
		return net.ErrClosed
	}
	t := time.NewTimer(closeFlushWait)
	defer t.Stop()
	select {
	case <-q.done:
	case <-t.C:
		// A peer that does not read: end the write under way.
		_ = q.Conn.SetWriteDeadline(time.Now())
		<-q.done
	}
	return nil
}
