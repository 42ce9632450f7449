//go:build linux

package delayline

import (
	"syscall"
	"unsafe"
)

// Each direction runs in one of two modes, switched by how busy its thread is:
//
//   - precise (light load: pings, handshakes, request/response): SCHED_FIFO, if asked for,
//     so other processes on a shared machine cannot delay a departure by milliseconds; and
//     early wake-up with a short busy-poll, so departures are exact to a few microseconds;
//   - throughput (heavy load: bulk TCP): SCHED_OTHER at nice -5 and no busy-poll. A real-time
//     thread that is busy most of the time starves ksoftirqd, which delivers its own input
//     frames, and hits the kernel's RT throttling (stopped for ~50 ms of every second):
//     measured, TCP at 300 Mbit/s through a SCHED_FIFO delay line saw 80 ms stalls and drops.
//     When frames are that dense, microsecond precision of each departure buys nothing. The
//     small nice boost keeps the emulator from becoming the bottleneck when it competes with
//     the traffic generator for the CPU (measured on 2 vCPUs, unlimited rate, 10 ms: ~420
//     Mbit/s at nice 0, ~560 at nice -5, no better at -10) without starving anything.
//
// With --rt-priority 0 the scheduling policy and nice value are never touched; only the
// busy-poll follows the mode.
//
// The thread measures its own CPU time over windows of modeWindow; above busyEnter it
// switches to throughput mode, below busyLeave back to precise (hysteresis, no flapping).
const (
	modeWindow = 20_000_000 // ns
	busyEnter  = 0.50
	busyLeave  = 0.25
)

const (
	throughputNice       = -5
	schedOther           = 0
	schedFIFO            = 1
	clockThreadCPUTimeID = 3
)

type modeState struct {
	precise     bool  // current mode
	rtWanted    bool  // SCHED_FIFO requested and not known to fail
	windowStart int64 // monoNow at the start of the current window
	cpuStart    int64 // thread CPU time then
	since       int64 // monoNow when the current mode was entered
}

// threadCPUTime is the calling thread's CPU time in ns (clock_gettime is not in the vDSO for
// thread clocks: one syscall per window, i.e. ~50 per second).
func threadCPUTime() int64 {
	var ts syscall.Timespec
	_, _, errno := syscall.RawSyscall(syscall.SYS_CLOCK_GETTIME, clockThreadCPUTimeID, uintptr(unsafe.Pointer(&ts)), 0)
	if errno != 0 {
		return 0
	}
	return ts.Nano()
}

// setThreadPolicy sets the calling thread's scheduling policy (SCHED_FIFO at prio, or
// SCHED_OTHER with prio 0).
func setThreadPolicy(policy, prio int) error {
	param := struct{ priority int32 }{int32(prio)}
	_, _, errno := syscall.RawSyscall(syscall.SYS_SCHED_SETSCHEDULER, 0, uintptr(policy), uintptr(unsafe.Pointer(&param)))
	if errno != 0 {
		return errno
	}
	return nil
}

// initMode starts the calling (locked) thread in precise mode.
func (d *direction) initMode(now int64) {
	d.mode = modeState{
		precise: true, rtWanted: d.rtPriority > 0, windowStart: now, cpuStart: threadCPUTime(), since: now,
	}
	d.applyPolicy()
}

// setPrecise switches mode (and scheduling policy) and accounts the time spent in the old one.
func (d *direction) setPrecise(precise bool, now int64) {
	if d.mode.precise != precise {
		d.stats.ModeSwitches.Add(1)
	}
	// Close the throughput period (if any) before counting it, so that a concurrent stats
	// snapshot may miss it for an instant but never counts it twice.
	d.stats.inThroughputSince.Store(0)
	if !d.mode.precise && now > d.mode.since {
		d.stats.ThroughputModeNs.Add(uint64(now - d.mode.since))
	}
	d.mode.precise, d.mode.since = precise, now
	if !precise {
		d.stats.inThroughputSince.Store(now)
	}
	d.applyPolicy()
}

// applyPolicy gives the calling thread the scheduling policy of the current mode.
func (d *direction) applyPolicy() {
	if !d.mode.rtWanted {
		return
	}
	if !d.mode.precise {
		_ = setThreadPolicy(schedOther, 0)
		_ = syscall.Setpriority(syscall.PRIO_PROCESS, syscall.Gettid(), throughputNice)
		return
	}
	if err := setThreadPolicy(schedFIFO, d.rtPriority); err != nil {
		d.mode.rtWanted = false // e.g. no RT budget in this cgroup: stop asking
		if d.warn != nil {
			d.warn("%s: SCHED_FIFO priority %d: %v (running at normal priority)", d.name, d.rtPriority, err)
		}
		return
	}
	d.realtime.Store(true)
}

// adaptMode closes a measurement window when one has elapsed and switches mode if needed.
func (d *direction) adaptMode(now int64) {
	if now-d.mode.windowStart >= modeWindow {
		d.closeWindow(now, threadCPUTime())
	}
}

// closeWindow decides the mode from the thread's CPU time cpu (ns) at now.
func (d *direction) closeWindow(now, cpu int64) {
	elapsed := now - d.mode.windowStart
	busy := float64(cpu-d.mode.cpuStart) / float64(elapsed)
	d.mode.windowStart, d.mode.cpuStart = now, cpu
	switch {
	case d.mode.precise && busy > busyEnter:
		d.setPrecise(false, now)
	case !d.mode.precise && busy < busyLeave:
		d.setPrecise(true, now)
	}
}
