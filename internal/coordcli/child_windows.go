package coordcli

import (
	"os/exec"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/windows"
)

// sysProcAttr: the child leads a process group of its own, so that a
// console control event can be sent to it and its children alone. Such a
// group ignores ^C (CTRL_C_EVENT) unless a process in it turns ^C back on,
// so coord passes ^C on as ^Break (CTRL_BREAK_EVENT), which Go programs
// and most console programs take as ^C; its children inherit the group.
func sysProcAttr(bool) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{CreationFlags: windows.CREATE_NEW_PROCESS_GROUP}
}

// signalGrace is how long the child has to exit after a signal passed on
// as ^Break before run kills it, and with it the job.
const signalGrace = 10 * time.Second

// terminal: on Windows the console is shared whatever the process tree.
func terminal() (tty, foreground bool) { return false, false }

// tieToParent puts the child in a job object that kills it when the job's
// last handle closes, which happens when coord exits or is killed. The
// child runs for a moment before it is assigned; a child it starts in that
// moment is not in the job.
func tieToParent(cmd *exec.Cmd, _ bool) (release func()) {
	job, err := windows.CreateJobObject(nil, nil)
	if err != nil {
		return func() {}
	}
	info := windows.JOBOBJECT_EXTENDED_LIMIT_INFORMATION{}
	info.BasicLimitInformation.LimitFlags = windows.JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
	windows.SetInformationJobObject(job, windows.JobObjectExtendedLimitInformation,
		uintptr(unsafe.Pointer(&info)), uint32(unsafe.Sizeof(info)))
	if p, err := windows.OpenProcess(windows.PROCESS_SET_QUOTA|windows.PROCESS_TERMINATE, false, uint32(cmd.Process.Pid)); err == nil {
		windows.AssignProcessToJobObject(job, p)
		windows.CloseHandle(p)
	}
	return func() { windows.CloseHandle(job) }
}

// signalChild passes SIGINT, SIGTERM and SIGHUP on as ^Break to the
// child's process group; run kills the child if it is still there after
// signalGrace. When the event cannot be sent (coord has no console, or
// none shared with the child), and for SIGKILL, the child is killed at
// once; when run returns, closing the job kills what the child left.
func signalChild(cmd *exec.Cmd, s syscall.Signal, _ bool) {
	if s != syscall.SIGKILL && windows.GenerateConsoleCtrlEvent(windows.CTRL_BREAK_EVENT, uint32(cmd.Process.Pid)) == nil {
		return
	}
	cmd.Process.Kill()
}
