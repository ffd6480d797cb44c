//go:build unix

package integration_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Whole processes, as a shell script pays for them: coord against
// util-linux flock(1), and the bare cost of starting `true`.

func benchProcess(b *testing.B, name string, args ...string) {
	path, err := exec.LookPath(name)
	if err != nil {
		b.Skipf("%s not installed", name)
	}
	env := append(os.Environ(), "COORD_LOCK_DIR="+b.TempDir())
	for b.Loop() {
		cmd := exec.Command(path, args...)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%v: %v\n%s", cmd.Args, err, out)
		}
	}
}

func BenchmarkProcess_Coord(b *testing.B) {
	benchProcess(b, coordBin, "lock", "bench", "--", "true")
}

func BenchmarkProcess_Flock1(b *testing.B) {
	benchProcess(b, "flock", filepath.Join(b.TempDir(), "bench.lock"), "true")
}

func BenchmarkProcess_True(b *testing.B) {
	benchProcess(b, "true")
}
