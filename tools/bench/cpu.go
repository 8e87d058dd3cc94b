package bench

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTick is the unit of utime and stime in /proc/<pid>/stat (USER_HZ,
// 100 on Linux).
const clockTick = 10 * time.Millisecond

// cpuTime is the user plus system CPU time process pid has used, from
// /proc/<pid>/stat; false where there is no such file.
func cpuTime(pid int) (time.Duration, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// The command name (field 2) may hold spaces: count from its ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, false
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(utime+stime) * clockTick, true
}

// pidOf returns the process whose command name is comm and that has used
// the most CPU time, 0 for none. Twice a side's line lacked RabbitMQ's
// CPU: its process was not found, or was gone by the end of the run. The
// busiest process of the name is the broker rather than a short-lived one
// (RabbitMQ's command line tools run as beam.smp too), and the scan is
// repeated while it finds none.
func pidOf(comm string) int {
	best, most := 0, time.Duration(-1)
	for range 3 {
		paths, _ := filepath.Glob("/proc/[0-9]*/comm")
		for _, p := range paths {
			b, err := os.ReadFile(p)
			if err != nil || strings.TrimSpace(string(b)) != comm {
				continue
			}
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			if t, ok := cpuTime(pid); ok && t > most {
				best, most = pid, t
			}
		}
		if best != 0 {
			break
		}
	}
	return best
}

// cpuMeter measures the CPU time named processes use over one run.
type cpuMeter struct {
	procs []meteredProc
}

type meteredProc struct {
	name   string
	pid    int
	client bool // the side's own code (not a broker)
	start  time.Duration
}

// add measures pid under name from now on; pid 0 is skipped. client marks
// the processes that run the side's code rather than a broker's.
func (m *cpuMeter) add(name string, pid int, client bool) {
	t, ok := cpuTime(pid)
	if pid == 0 || !ok {
		return
	}
	m.procs = append(m.procs, meteredProc{name: name, pid: pid, client: client, start: t})
}

// read returns each process's CPU time since add divided by n, as
// "name 12 µs, ...; total 40 µs", and the CPU time of the client processes.
func (m *cpuMeter) read(n int) (perMessage string, client time.Duration) {
	if n <= 0 || len(m.procs) == 0 {
		return "", 0
	}
	var parts []string
	var total time.Duration
	for _, p := range m.procs {
		t, ok := cpuTime(p.pid)
		if !ok {
			continue
		}
		d := t - p.start
		total += d
		if p.client {
			client += d
		}
		parts = append(parts, fmt.Sprintf("%s %.0f µs", p.name, float64(d.Microseconds())/float64(n)))
	}
	return fmt.Sprintf("%s; total %.0f µs", strings.Join(parts, ", "), float64(total.Microseconds())/float64(n)), client
}

// isLoopback reports whether the broker at rawURL runs on this machine (its
// CPU time can be read).
func isLoopback(rawURL string) bool {
	u, err := url.Parse(rawURL)
	if err != nil {
		return false
	}
	if u.Hostname() == "localhost" {
		return true
	}
	ip := net.ParseIP(u.Hostname())
	return ip != nil && ip.IsLoopback()
}

// clock measures one timed stretch of a run: wall time and this process's
// CPU time (user and system, all threads).
type clock struct {
	start time.Time
	cpu   time.Duration
}

func startClock() clock { return clock{start: time.Now(), cpu: processCPU()} }

// result is a Result of n messages timed from c's start to now.
func (c clock) result(n int, lat []time.Duration) Result {
	return Result{Messages: n, Elapsed: time.Since(c.start), CPU: processCPU() - c.cpu, Latencies: lat}
}

// processCPU is this process's user plus system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
