package coordcli

import (
	"bytes"
	"os"
	"strconv"
)

// processStat is pid's state (field 3 of /proc/PID/stat: "Z" for a
// zombie, which kill(pid, 0) still finds) and when it started, in clock
// ticks since boot (field 22), so that a followed pid reused by a new
// process is told from the one followed; "" for what is unknown.
func processStat(pid int) (state, start string) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", ""
	}
	// The command name, field 2, is in parentheses and may hold anything.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return "", ""
	}
	f := bytes.Fields(b[i+1:]) // fields 3 on
	if len(f) < 20 {
		return "", ""
	}
	return string(f[0]), string(f[19])
}
