package coord_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/toolchainkit/coord/coord"
)

func Example() {
	tmp, _ := os.MkdirTemp("", "coord-example-")
	defer os.RemoveAll(tmp)
	ctx := context.Background()

	m, err := coord.New(ctx, coord.Config{Backend: coord.BackendFile, LockDir: filepath.Join(tmp, "locks")})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close()

	l, err := m.RegistryLock(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	first := l.Token() // pass it to what you guard
	l.Unlock()
	if l, err = m.RegistryLock(ctx); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("next token is greater:", l.Token() > first)
	l.Unlock()

	dc := coord.NewDownloadCoordinator(m)
	dest := filepath.Join(tmp, "toolchains", "llvm-18")
	fetch := func(ctx context.Context, dir string) error {
		return os.WriteFile(filepath.Join(dir, "clang"), []byte("#!/bin/sh\n"), 0o755)
	}
	for range 2 {
		downloaded, err := dc.Do(ctx, "llvm-18", dest, fetch)
		fmt.Println("downloaded:", downloaded, err)
	}
	// Output:
	// next token is greater: true
	// downloaded: true <nil>
	// downloaded: false <nil>
}

func ExampleManager_Lock_timeout() {
	tmp, _ := os.MkdirTemp("", "coord-example-")
	defer os.RemoveAll(tmp)
	ctx := context.Background()
	cfg := coord.Config{Backend: coord.BackendFile, LockDir: tmp}
	a, _ := coord.New(ctx, cfg)
	defer a.Close()
	b, _ := coord.New(ctx, cfg)
	defer b.Close()

	held, _ := a.Lock(ctx, "cache-gc")
	defer held.Unlock()
	_, err := b.Lock(ctx, "cache-gc", coord.WithTimeout(0))
	var te *coord.TimeoutError
	if errors.As(err, &te) {
		fmt.Println("busy; holder is this process:", te.Holder.PID == os.Getpid())
	}
	// Output:
	// busy; holder is this process: true
}
