package queuedconn

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection, closed at the
// test's end.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { _ = client.Close(); _ = server.Close() })
	return client, server
}

// queued is how many bytes wait in q's queue.
func (q *Conn) queued() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.queue)
}

// Concurrent writers, as publishers on one connection: every Write
// arrives whole, each writer's in its order, nothing lost.
func TestKeepsEachWriteWhole(t *testing.T) {
	const writers, records = 16, 400
	client, server := tcpPair(t)
	q := New(client)

	// A record: writer (2 bytes), sequence (4), length (4), then length
	// bytes of the sequence's low byte. Lengths vary up to 9 000 bytes,
	// so the records cross the queue's bound many times.
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := range records {
				n := (seq*7919 + w*104729) % 9000
				rec := make([]byte, 10+n)
				binary.BigEndian.PutUint16(rec, uint16(w))
				binary.BigEndian.PutUint32(rec[2:], uint32(seq))
				binary.BigEndian.PutUint32(rec[6:], uint32(n))
				for i := range n {
					rec[10+i] = byte(seq)
				}
				if _, err := q.Write(rec); err != nil {
					t.Errorf("writer %d, record %d: %v", w, seq, err)
					return
				}
			}
		}()
	}

	next := make([]int, writers)
	head := make([]byte, 10)
	for range writers * records {
		if _, err := io.ReadFull(server, head); err != nil {
			t.Fatalf("read record head: %v", err)
		}
		w, seq, n := int(binary.BigEndian.Uint16(head)), int(binary.BigEndian.Uint32(head[2:])), int(binary.BigEndian.Uint32(head[6:]))
		if w >= writers || seq != next[w] {
			t.Fatalf("record of writer %d, sequence %d; want sequence %d (records cut or out of order)", w, seq, next[w])
		}
		next[w]++
		body := make([]byte, n)
		if _, err := io.ReadFull(server, body); err != nil {
			t.Fatalf("read record body: %v", err)
		}
		if !bytes.Equal(body, bytes.Repeat([]byte{byte(seq)}, n)) {
			t.Fatalf("writer %d, record %d: body changed", w, seq)
		}
	}
	wg.Wait()
	if err := q.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if n, err := server.Read(head); err != io.EOF {
		t.Fatalf("after close: read %d bytes, %v; want EOF", n, err)
	}
}

// A peer that does not read holds Write at the queue's bound: the queue
// never grows past it, and all arrives once the peer reads.
func TestBoundsItsQueue(t *testing.T) {
	const chunk, chunks = 16 << 10, 64
	client, server := net.Pipe() // a write waits for the peer's read
	defer server.Close()
	q := New(client)
	defer q.Close()

	wrote := make(chan error, 1)
	go func() {
		for i := range chunks {
			if _, err := q.Write(bytes.Repeat([]byte{byte(i)}, chunk)); err != nil {
				wrote <- err
				return
			}
		}
		wrote <- nil
	}()

	// The writer holds the first chunk(s) in its write to the pipe; the
	// queue fills up to the bound.
	deadline := time.Now().Add(20 * time.Second)
	for q.queued() <= queueBytes-chunk {
		if time.Now().After(deadline) {
			t.Fatalf("queue never filled: %d bytes", q.queued())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := q.queued(); n > queueBytes {
		t.Fatalf("queue holds %d bytes, bound %d", n, queueBytes)
	}
	select {
	case err := <-wrote:
		t.Fatalf("all %d bytes taken while the peer read none (err %v)", chunk*chunks, err)
	default:
	}

	got := make([]byte, chunk*chunks)
	if _, err := io.ReadFull(server, got); err != nil {
		t.Fatalf("read: %v", err)
	}
	for i := range chunks {
		if !bytes.Equal(got[i*chunk:(i+1)*chunk], bytes.Repeat([]byte{byte(i)}, chunk)) {
			t.Fatalf("chunk %d changed", i)
		}
	}
	if err := <-wrote; err != nil {
		t.Fatalf("write: %v", err)
	}
}

// A write that fails (here: a deadline in the past, as an adapter's stop sets
// one) closes the socket, so that a read under way ends, and every later
// Write returns the error.
func TestWriteErrorEndsTheConnection(t *testing.T) {
	client, _ := tcpPair(t)
	q := New(client)
	defer q.Close()

	read := make(chan error, 1)
	go func() {
		_, err := q.Read(make([]byte, 1)) // the peer sends nothing
		read <- err
	}()
	if err := q.SetWriteDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Write([]byte("frame")); err != nil {
		t.Fatalf("first write: %v; want it queued", err)
	}
	select {
	case err := <-read:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read ended with %v; want net.ErrClosed", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the failed write did not close the socket")
	}
	if _, err := q.Write([]byte("frame")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write after the failure: %v; want the write's error", err)
	}
}

// Close hands what is queued to the socket, even to a peer that reads
// only later; to a peer that never reads, it gives up after closeFlushWait.
func TestClose(t *testing.T) {
	t.Run("hands the queue over", func(t *testing.T) {
		client, server := tcpPair(t)
		q := New(client)
		want := bytes.Repeat([]byte("close-ok"), 10000)
		for i := 0; i < len(want); i += 800 {
			if _, err := q.Write(want[i:min(i+800, len(want))]); err != nil {
				t.Fatal(err)
			}
		}
		if err := q.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
		got, err := io.ReadAll(server)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("peer read %d of %d bytes (%v)", len(got), len(want), err)
		}
		if _, err := q.Write([]byte("late")); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("write after close: %v; want net.ErrClosed", err)
		}
		if err := q.Close(); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("second close: %v; want net.ErrClosed", err)
		}
	})
	t.Run("gives up on a peer that does not read", func(t *testing.T) {
		client, server := net.Pipe()
		defer server.Close()
		q := New(client)
		if _, err := q.Write([]byte("never read")); err != nil {
			t.Fatal(err)
		}
		closed := make(chan error, 1)
		go func() { closed <- q.Close() }()
		select {
		case err := <-closed:
			if err != nil {
				t.Fatalf("close: %v", err)
			}
		case <-time.After(closeFlushWait + 20*time.Second):
			t.Fatal("close waited for a peer that does not read")
		}
		if _, err := server.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("peer read %v; want EOF (socket closed)", err)
		}
	})
}
