// Package benchpeer measures a lock's handoff between two processes: the
// benchmark's test binary, re-executed as a peer, waits for the lock the
// benchmark holds, and says when it got it.
//
// The peer is told what to do over a pipe: for each line on its stdin it
// says "waiting", blocks until it holds the lock, releases it and writes
// "held <ns>", a time read just after the acquire on the clock both
// processes share (see Handoff.Now).
package benchpeer

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// envMode holds the peer's mode; set means "be a peer".
const envMode = "COORD_BENCH_PEER"

// Mode returns the mode this process was started in as a peer, or "" when
// it is not a peer.
func Mode() string { return os.Getenv(envMode) }

// Serve is the peer's side, for the test the peer is started to run: for
// each line read from in it writes "waiting" to out, calls acquire, reads
// now, calls the release acquire returned and writes "held <now>". It
// returns when in ends.
func Serve(in io.Reader, out io.Writer, acquire func() func(), now func() int64) error {
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		if _, err := fmt.Fprintln(out, "waiting"); err != nil {
			return err
		}
		release := acquire()
		held := now()
		release()
		if _, err := fmt.Fprintln(out, "held", held); err != nil {
			return err
		}
	}
	return sc.Err()
}

// Handoff is one benchmark of the time from this process's unlock to the
// peer holding the lock.
type Handoff struct {
	Test    string        // the test that calls Serve in the peer, e.g. "TestBenchPeer"
	Mode    string        // the peer's mode, as Mode returns it there
	Env     []string      // more "KEY=value" for the peer: where the lock is
	Acquire func() func() // blocks until this process holds the lock; returns its release
	Settle  func()        // between the peer saying "waiting" and the release; may be nil
	Now     func() int64  // a clock in ns that the peer's now reads too
}

// Run starts the peer and, for each b.Loop, takes the lock, tells the peer
// to wait for it, calls Settle, releases it and reads when the peer held
// it; it reports the median as ns/handoff.
func (h Handoff) Run(b *testing.B) {
	cmd := exec.Command(os.Args[0], "-test.run=^"+h.Test+"$", "-test.count=1")
	cmd.Env = append(append(os.Environ(), envMode+"="+h.Mode), h.Env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer cmd.Wait()
	defer stdin.Close()
	out := bufio.NewScanner(stdout)
	expect := func(word string) string {
		for out.Scan() {
			if f := strings.Fields(out.Text()); len(f) > 0 && f[0] == word {
				return strings.Join(f[1:], " ")
			}
		}
		b.Fatalf("peer: no %q line: %v", word, out.Err())
		return ""
	}
	var lat []time.Duration
	for b.Loop() {
		release := h.Acquire()
		fmt.Fprintln(stdin, "go")
		expect("waiting")
		if h.Settle != nil {
			h.Settle()
		}
		t0 := h.Now()
		release()
		held, err := strconv.ParseInt(expect("held"), 10, 64)
		if err != nil {
			b.Fatal(err)
		}
		if held < t0 {
			b.Fatalf("the peer held the lock %s before it was released", time.Duration(t0-held))
		}
		lat = append(lat, time.Duration(held-t0))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "ns/handoff")
}

// InProcess measures a handoff within one process: the benchmark holds
// the lock, a goroutine blocks on it, and after settle the benchmark lets
// go; it reports the median time from the release to the goroutine's
// acquire as ns/handoff. acquire blocks until it holds the lock and
// returns the release.
func InProcess(b *testing.B, settle time.Duration, acquire func() func()) {
	var lat []time.Duration
	for b.Loop() {
		release := acquire()
		got := make(chan time.Time)
		go func() {
			r := acquire()
			got <- time.Now()
			r()
		}()
		time.Sleep(settle) // let the waiter block
		t0 := time.Now()
		release()
		lat = append(lat, (<-got).Sub(t0))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "ns/handoff")
}
