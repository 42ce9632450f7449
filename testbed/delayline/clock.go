//go:build linux

package delayline

import (
	"syscall"
	"time"
	"unsafe"
)

// The Go runtime parks idle threads in epoll_wait with a millisecond timeout, so time.Sleep
// and timers wake up to ~1 ms late: far too coarse for a 10 ms delay calibrated to 0.3 ms.
// Each direction's event loop therefore owns its OS thread (runtime.LockOSThread), sets that
// thread's timer slack to 1 ns and waits in ppoll(2), whose timeout is an hrtimer.

var clockBase = time.Now()

// monoNow is nanoseconds on the monotonic clock since the process started (vDSO, ~20 ns).
func monoNow() int64 { return int64(time.Since(clockBase)) }

const prSetTimerslack = 29 // PR_SET_TIMERSLACK, <linux/prctl.h>

// setThreadTimerSlack lowers the calling thread's timer slack (default 50 us) so ppoll wakes
// when asked. Call on a locked OS thread; failure only costs precision.
func setThreadTimerSlack(ns uintptr) {
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerslack, ns, 0)
}

// arrivalTime converts a frame's kernel receive timestamp (SCM_TIMESTAMPNS, wall clock) to
// the monotonic timeline of monoNow, using clock, read right after recvmsg returned: the
// frame arrived (wall now - stamp) ago. Without a usable stamp (none, or a wall-clock step
// made it negative or absurd) the frame counts as arriving now.
func arrivalTime(clock time.Time, oob []byte) int64 {
	now := int64(clock.Sub(clockBase))
	hdrLen := syscall.CmsgLen(0)
	if len(oob) < hdrLen+int(unsafe.Sizeof(syscall.Timespec{})) {
		return now
	}
	cmsg := (*syscall.Cmsghdr)(unsafe.Pointer(&oob[0]))
	if cmsg.Level != syscall.SOL_SOCKET || cmsg.Type != syscall.SCM_TIMESTAMPNS {
		return now
	}
	stamp := (*syscall.Timespec)(unsafe.Pointer(&oob[hdrLen]))
	return arrivalFromStamp(clock, stamp.Nano())
}

// arrivalFromStamp converts a wall-clock receive stamp (ns since the epoch) to monoNow's
// timeline as arrivalTime does; an absurd stamp counts as arriving at clock.
func arrivalFromStamp(clock time.Time, stampNs int64) int64 {
	now := int64(clock.Sub(clockBase))
	age := clock.UnixNano() - stampNs
	if age < 0 || age > int64(time.Second) {
		return now
	}
	return now - age
}
