package coord_test

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/toolchainkit/coord/coord"
)

// readmeExample is the README's library example, compiled here; between
// the markers it must read as the README's first go block
// (TestReadmeExampleMatches).
func readmeExample(ctx context.Context) error {
	// README: begin
	m, err := coord.New(ctx, coord.Config{}) // file backend in ~/.toolchainkit/locks
	if err != nil {
		return err
	}
	defer m.Close()

	l, err := m.RegistryLock(ctx) // waits up to 30s
	if err != nil {
		return err // a *coord.TimeoutError names the holder
	}
	err = updateRegistry(l.Token()) // pass the fencing token to what you guard
	l.Unlock()
	if err != nil {
		return err
	}

	dc := coord.NewDownloadCoordinator(m)
	downloaded, err := dc.Do(ctx, "llvm-18.1.8-linux-x64", "/opt/llvm-18.1.8",
		func(ctx context.Context, dir string) error {
			return fetchAndExtract(ctx, dir) // dir is a sibling of dest; Do renames it into place
		})
	if err != nil {
		return err // a download that stopped moving: a *coord.TimeoutError with Stalled set
	}
	fmt.Println("downloaded by this process:", downloaded)
	// README: end
	return nil
}

func updateRegistry(token int64) error                      { return nil }
func fetchAndExtract(ctx context.Context, dir string) error { return nil }

var _ = readmeExample

func TestReadmeExampleMatches(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```go\n(.*?)```").FindSubmatch(readme)
	if m == nil {
		t.Fatal("README.md has no go block")
	}
	src, err := os.ReadFile("readme_test.go")
	if err != nil {
		t.Fatal(err)
	}
	s := string(src)
	body := s[strings.Index(s, "// README: begin\n")+len("// README: begin\n") : strings.Index(s, "\t// README: end")]
	if got, want := unindent(string(m[1])), unindent(body); got != want {
		t.Errorf("README.md's go block differs from readmeExample in coord/readme_test.go, which compiles; make them agree.\nREADME:\n%s\nreadme_test.go:\n%s", got, want)
	}
}

// unindent drops each line's leading tabs.
func unindent(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimLeft(l, "\t")
	}
	return strings.Join(lines, "\n")
}
