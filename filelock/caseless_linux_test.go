package filelock_test

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/toolchainkit/coord/filelock"
)

const (
	// envCaselessDir names a directory on a file system that ignores case,
	// for TestCaseOnlyNamesAreDistinctLocks; without it the test mounts one
	// itself where it can.
	envCaselessDir = "COORD_TEST_CASELESS_DIR"
	// envCaselessHold makes TestCaselessHolder hold a lock: DIR/NAME, NAME
	// without a slash.
	envCaselessHold = "COORD_TEST_CASELESS_HOLD"
)

// TestCaselessHolder is TestCaseOnlyNamesAreDistinctLocks's other process:
// it holds the lock, prints "held", and lets go when its stdin closes.
func TestCaselessHolder(t *testing.T) {
	arg := os.Getenv(envCaselessHold)
	if arg == "" {
		t.Skip("a helper process of TestCaseOnlyNamesAreDistinctLocks")
	}
	dir, name := filepath.Split(arg)
	l, err := filelock.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	k, err := l.TryLock(context.Background(), name, filelock.Exclusive, []byte(`{"pid":1}`))
	if err != nil {
		t.Fatalf("TryLock(%q): %v", name, err)
	}
	os.Stdout.WriteString("held\n")
	bufio.NewReader(os.Stdin).ReadString('\n')
	if err := k.Unlock(); err != nil {
		t.Fatal(err)
	}
}

// TestCaseOnlyNamesAreDistinctLocks holds "LLVM" in another process and
// "llvm" in this one, both at once, on a file system that ignores case,
// where "LLVM.lock" and "llvm.lock" would be one file. The count of lock
// files is what tells: fusefat gives each spelling of a name an inode of its
// own, so there flock does not exclude across spellings even of one file.
func TestCaseOnlyNamesAreDistinctLocks(t *testing.T) {
	dir := caselessDir(t)

	holder := exec.Command(os.Args[0], "-test.run=^TestCaselessHolder$", "-test.count=1")
	holder.Env = append(os.Environ(), envCaselessHold+"="+filepath.Join(dir, "LLVM"))
	holder.Stderr = os.Stderr
	stdin, err := holder.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); holder.Wait() })
	if line, _ := bufio.NewReader(stdout).ReadString('\n'); line != "held\n" {
		t.Fatalf("holder of LLVM says %q; want \"held\"", line)
	}

	l := newLocker(t, dir)
	// The file system's locks work: "LLVM" itself is busy here.
	if _, err := l.TryLock(context.Background(), "LLVM", filelock.Exclusive, nil); !errors.Is(err, filelock.ErrBusy) {
		t.Fatalf("TryLock(LLVM) while another process holds it: %v; want ErrBusy", err)
	}
	k := lock(t, l, "llvm", filelock.Exclusive)
	defer k.Unlock()
	var files []string
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".lock") {
			files = append(files, e.Name())
		}
	}
	if len(files) != 2 {
		t.Errorf("lock files %q; want two, LLVM's and llvm's", files)
	}
	stdin.Close()
	if err := holder.Wait(); err != nil {
		t.Errorf("holder of LLVM: %v", err)
	}
}

// caselessDir returns an empty directory on a file system that ignores
// case: $COORD_TEST_CASELESS_DIR, else one it mounts for the test (root
// only): ext4 with casefold where the kernel has CONFIG_UNICODE, else FAT
// through fusefat (Debian packages fusefat, dosfstools). It skips t if it
// finds none, and checks that the directory does ignore case.
func caselessDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv(envCaselessDir)
	if dir == "" {
		var reasons []string
		for _, mount := range []func(t *testing.T, img, mnt string) error{mountExt4Casefold, mountFAT} {
			tmp := t.TempDir()
			img, mnt := filepath.Join(tmp, "fs.img"), filepath.Join(tmp, "mnt")
			if err := mount(t, img, mnt); err != nil {
				reasons = append(reasons, err.Error())
				continue
			}
			dir = filepath.Join(mnt, "locks")
			break
		}
		if dir == "" {
			t.Skipf("no file system that ignores case: %s; set %s to a directory on one", strings.Join(reasons, "; "), envCaselessDir)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	probe := filepath.Join(dir, "CaseProbe")
	if err := os.WriteFile(probe, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := os.Stat(filepath.Join(dir, "caseprobe"))
	os.Remove(probe)
	if err != nil {
		t.Fatalf("%s does not ignore case: %v", dir, err)
	}
	return dir
}

func mountExt4Casefold(t *testing.T, img, mnt string) error {
	if os.Geteuid() != 0 {
		return errors.New("ext4 casefold: mounting needs root")
	}
	if _, err := os.Stat("/sys/fs/ext4/features/casefold"); err != nil {
		return errors.New("ext4 casefold: the kernel lacks it (CONFIG_UNICODE)")
	}
	if err := run("truncate", "-s", "16M", img); err != nil {
		return err
	}
	if err := run("mkfs.ext4", "-q", "-O", "casefold", img); err != nil {
		return err
	}
	if err := os.Mkdir(mnt, 0o755); err != nil {
		return err
	}
	if err := run("mount", "-o", "loop", img, mnt); err != nil {
		return err
	}
	t.Cleanup(func() { run("umount", mnt) })
	if err := os.Mkdir(filepath.Join(mnt, "locks"), 0o755); err != nil {
		return err
	}
	return run("chattr", "+F", filepath.Join(mnt, "locks"))
}

func mountFAT(t *testing.T, img, mnt string) error {
	if os.Geteuid() != 0 {
		return errors.New("fusefat: mounting needs root")
	}
	for _, tool := range []string{"mkfs.vfat", "fusefat"} {
		if _, err := exec.LookPath(tool); err != nil {
			return errors.New("fusefat: " + tool + " is not installed")
		}
	}
	if err := run("truncate", "-s", "16M", img); err != nil {
		return err
	}
	if err := run("mkfs.vfat", img); err != nil {
		return err
	}
	if err := os.Mkdir(mnt, 0o755); err != nil {
		return err
	}
	if err := run("fusefat", "-o", "rw+", img, mnt); err != nil {
		return err
	}
	t.Cleanup(func() { run("umount", mnt) })
	return nil
}

// run runs a set-up command; its error carries the command's output.
func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return errors.New(name + ": " + strings.TrimSpace(string(out)) + ": " + err.Error())
	}
	return nil
}
