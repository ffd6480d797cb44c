//go:build darwin || dragonfly || freebsd || netbsd || openbsd

package guard

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// watchParent returns a channel closed once the process parent is gone,
// which kqueue reports (EVFILT_PROC, NOTE_EXIT) even when it was killed by
// SIGKILL; stop ends the watch. If parent is gone already, gone is closed
// on return: the registration fails (ESRCH), or parent died between the
// guard's start and the registration, and getppid no longer returns it.
func watchParent(parent int) (gone <-chan struct{}, stop func(), err error) {
	kq, err := unix.Kqueue()
	if err != nil {
		return nil, nil, fmt.Errorf("kqueue: %w", err)
	}
	unix.CloseOnExec(kq)
	// stop writes to a pipe that the same kqueue watches, to wake the
	// watcher and end it.
	var p [2]int
	if err := unix.Pipe(p[:]); err != nil {
		unix.Close(kq)
		return nil, nil, fmt.Errorf("pipe: %w", err)
	}
	unix.CloseOnExec(p[0])
	unix.CloseOnExec(p[1])
	closeAll := func() { unix.Close(kq); unix.Close(p[0]); unix.Close(p[1]) }
	g := make(chan struct{})

	changes := make([]unix.Kevent_t, 2)
	unix.SetKevent(&changes[0], p[0], unix.EVFILT_READ, unix.EV_ADD)
	unix.SetKevent(&changes[1], parent, unix.EVFILT_PROC, unix.EV_ADD|unix.EV_ONESHOT)
	changes[1].Fflags = unix.NOTE_EXIT
	if _, err := kevent(kq, changes[:1], nil); err != nil {
		closeAll()
		return nil, nil, fmt.Errorf("kevent: %w", err)
	}
	_, err = kevent(kq, changes[1:], nil)
	if errors.Is(err, unix.ESRCH) || err == nil && os.Getppid() != parent {
		closeAll()
		close(g)
		return g, func() {}, nil
	}
	if err != nil {
		closeAll()
		return nil, nil, fmt.Errorf("kevent: %w", err)
	}

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		events := make([]unix.Kevent_t, 2)
		for {
			n, err := kevent(kq, nil, events)
			if err != nil {
				return // not expected: the guard goes on unwatched
			}
			for _, ev := range events[:n] {
				switch {
				case ev.Filter == unix.EVFILT_PROC && ev.Fflags&unix.NOTE_EXIT != 0:
					close(g)
					return
				case ev.Filter == unix.EVFILT_READ:
					return // stop
				}
			}
		}
	}()
	return g, func() {
		unix.Write(p[1], []byte{0})
		wg.Wait()
		closeAll()
	}, nil
}

// kevent is unix.Kevent without timeout, retried when a signal interrupts it.
func kevent(kq int, changes, events []unix.Kevent_t) (int, error) {
	for {
		n, err := unix.Kevent(kq, changes, events, nil)
		if err != unix.EINTR {
			return n, err
		}
	}
}
