package guard

import (
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// watchParent returns a channel closed once the process parent, which
// started the guard with SIGUSR2 as its parent-death signal, is gone;
// stop ends the watch. If parent is gone already, gone is closed on return.
// A SIGUSR2 that anyone else sends is taken and checked against getppid.
func watchParent(parent int) (gone <-chan struct{}, stop func(), err error) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGUSR2)
	g, quit := make(chan struct{}), make(chan struct{})
	orphaned := func() bool { return os.Getppid() != parent }
	if orphaned() {
		signal.Stop(sigs)
		close(g)
		return g, func() {}, nil
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer signal.Stop(sigs)
		for {
			select {
			case <-sigs:
				if orphaned() {
					close(g)
					return
				}
			case <-quit:
				return
			}
		}
	}()
	return g, func() { close(quit); wg.Wait() }, nil
}
