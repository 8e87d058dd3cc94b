package integration

import (
	"errors"
	"net"
	"testing"
)

// A node whose listener port was taken between freePort and its boot (an
// outgoing connection's source port, on a busy machine) is started again
// on another port instead of failing its test.
func TestRabbitMQNodeStartsAgainWhenItsPortIsTaken(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	takenPort := taken.Addr().(*net.TCPAddr).Port
	picks := 0
	pick := func() (int, error) {
		if picks++; picks == 1 {
			return takenPort, nil
		}
		return freePort()
	}
	n, err := startNode(RabbitMQNodeOptions{Dir: t.TempDir()}, pick)
	if errors.Is(err, ErrNoRabbitMQServer) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatalf("node not started after its first port was taken: %v", err)
	}
	defer n.Stop()
	if picks < 2 {
		t.Fatalf("the node was started %d times, want a second start on a new port", picks)
	}
	conn, err := net.Dial("tcp", n.Addr)
	if err != nil {
		t.Fatalf("the restarted node does not listen on %s: %v", n.Addr, err)
	}
	conn.Close()
}
