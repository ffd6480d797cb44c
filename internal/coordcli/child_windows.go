package coordcli

import (
	"os/exec"
	"syscall"
	"unsafe"

	"golang.org/x/sys/windows"
)

func sysProcAttr(bool) *syscall.SysProcAttr { return nil }

// terminal: on Windows the console is shared whatever the process tree.
func terminal() (tty, foreground bool) { return false, false }

const guardCommand = "__guard"

func guardedArgv(argv []string, _ bool) []string { return argv }

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

// signalChild: Windows cannot pass signals on; the child is killed.
func signalChild(cmd *exec.Cmd, _ syscall.Signal, _ bool) {
	cmd.Process.Kill()
}
