//go:build linux

package delayline

import (
	"syscall"
	"testing"
	"time"
	"unsafe"
)

func TestPacketRingCountDue(t *testing.T) {
	var r packetRing
	for i := int64(0); i < 300; i++ {
		r.push(packet{departure: i * 10})
		if i%2 == 0 {
			r.pop() // make the ring wrap around
		}
	}
	// Remaining departures: 1500..2990 in steps of 10 (150 packets).
	if r.len() != 150 {
		t.Fatalf("len %d", r.len())
	}
	for _, c := range []struct{ now, want int64 }{{0, 0}, {1500, 1}, {1505, 1}, {2000, 51}, {5000, 150}} {
		if got := r.countDue(c.now); int64(got) != c.want {
			t.Errorf("countDue(%d) = %d, want %d", c.now, got, c.want)
		}
	}
}

func TestOvershootEstimatorTracksMedian(t *testing.T) {
	var e overshootEstimator
	// 90% of wake-ups 50 us late, 10% 200 us late: the median is 50 us.
	for i := 0; i < 5000; i++ {
		over := int64(50_000)
		if i%10 == 0 {
			over = 200_000
		}
		e.observe(over)
	}
	if e.median < 44_000 || e.median > 56_000 {
		t.Fatalf("estimate %d ns", e.median)
	}
	for i := 0; i < 5000; i++ {
		e.observe(5_000) // machine went quiet: estimate must come down
	}
	if e.median > 9_000 {
		t.Fatalf("estimate stuck at %d ns", e.median)
	}
}

func TestArrivalTimeFromKernelStamp(t *testing.T) {
	clock := clockBase.Add(5 * time.Second)
	now := int64(5 * time.Second)
	stampAt := func(age time.Duration) []byte {
		oob := make([]byte, syscall.CmsgSpace(int(unsafe.Sizeof(syscall.Timespec{}))))
		h := (*syscall.Cmsghdr)(unsafe.Pointer(&oob[0]))
		h.Level, h.Type = syscall.SOL_SOCKET, syscall.SCM_TIMESTAMPNS
		h.SetLen(syscall.CmsgLen(int(unsafe.Sizeof(syscall.Timespec{}))))
		*(*syscall.Timespec)(unsafe.Pointer(&oob[syscall.CmsgLen(0)])) = syscall.NsecToTimespec(clock.UnixNano() - int64(age))
		return oob
	}
	if got := arrivalTime(clock, stampAt(150*time.Microsecond)); got != now-150_000 {
		t.Errorf("150 us old frame: arrival %d, want %d", got, now-150_000)
	}
	// No stamp, a stamp from the future, or one older than a second (a wall-clock step): now.
	for _, oob := range [][]byte{nil, stampAt(-time.Millisecond), stampAt(2 * time.Second)} {
		if got := arrivalTime(clock, oob); got != now {
			t.Errorf("unusable stamp: arrival %d, want %d", got, now)
		}
	}
}

func TestModeSwitchesWithHysteresis(t *testing.T) {
	d := &direction{name: "a2b"} // rtPriority 0: no scheduling policy changes in a test
	d.initMode(0)
	d.mode.cpuStart = 0
	steps := []struct {
		busy    float64 // CPU fraction of the next 20 ms window
		precise bool    // expected mode after it
	}{{0.1, true}, {0.45, true}, {0.8, false}, {0.4, false}, {0.3, false}, {0.1, true}, {0.6, false}}
	now, cpu := int64(0), int64(0)
	for i, s := range steps {
		now += modeWindow
		cpu += int64(s.busy * modeWindow)
		d.closeWindow(now, cpu)
		if d.mode.precise != s.precise {
			t.Fatalf("step %d (busy %.2f): precise=%v, want %v", i, s.busy, d.mode.precise, s.precise)
		}
	}
	if got := d.stats.ModeSwitches.Load(); got != 3 {
		t.Errorf("mode switches %d, want 3", got)
	}
	// Throughput mode from 60 to 120 ms (closed) and from 140 ms on (open at 140).
	if got := d.stats.ThroughputModeNs.Load(); got != 3*modeWindow {
		t.Errorf("closed throughput time %d ns, want %d", got, 3*modeWindow)
	}
	if r := d.stats.report(Spec{}, 0, now+modeWindow); r.ThroughputMs != 80 {
		t.Errorf("reported throughput time %v ms, want 80", r.ThroughputMs)
	}
}

func TestOverloadLimitCoversStallsAtTheRate(t *testing.T) {
	for _, c := range []struct {
		spec Spec
		want int
	}{
		{Spec{Limit: 1000}, 1000},                     // no rate: the emulator is the bottleneck
		{Spec{Limit: 1000, RateBps: 100e6}, 1000},     // 100 ms at 100 Mbit/s is 833 frames
		{Spec{Limit: 1000, RateBps: 1e9}, 8333},       // 100 ms at 1 Gbit/s
		{Spec{Limit: 20000, RateBps: 1e9}, 20000},     // a deeper configured queue wins
		{Spec{Limit: 1, RateBps: 100e9}, maxInFlight}, // never beyond what the FIFO may hold
	} {
		if got := overloadLimit(c.spec); got != c.want {
			t.Errorf("overloadLimit(%+v) = %d, want %d", c.spec, got, c.want)
		}
	}
}

func TestRingFrameSizeHoldsAWholeFrame(t *testing.T) {
	for _, c := range []struct{ mtu, want int }{{1500, 2048}, {2000, 4096}, {9000, 16384}} {
		got := ringFrameSize(c.mtu)
		if got != c.want || got < ringDataOffset+c.mtu+ethHeaderLen {
			t.Errorf("ringFrameSize(%d) = %d, want %d", c.mtu, got, c.want)
		}
	}
}

// TestTxBatchSkipsOnlyTheFrameTheKernelRefuses sends a batch over a datagram socket pair in
// which one frame is larger than the socket accepts: sendmmsg stops there; the batch must
// report that frame's error once, deliver every other frame in order, and not stall.
func TestTxBatchSkipsOnlyTheFrameTheKernelRefuses(t *testing.T) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fds[0])
	defer syscall.Close(fds[1])
	if err := syscall.SetsockoptInt(fds[0], syscall.SOL_SOCKET, syscall.SO_SNDBUF, 64<<10); err != nil {
		t.Fatal(err)
	}
	frames := [][]byte{{1}, {2, 2}, make([]byte, 4<<20), {4, 4, 4, 4}, {5}}
	var results []syscall.Errno
	newTxBatch(len(frames)).send(fds[0], frames, func(i int, errno syscall.Errno) {
		if i != len(results) {
			t.Fatalf("done(%d) out of order after %d calls", i, len(results))
		}
		results = append(results, errno)
	})
	if len(results) != 5 || results[2] == 0 {
		t.Fatalf("results %v: want an error for frame 2 only", results)
	}
	for i, e := range results {
		if i != 2 && e != 0 {
			t.Errorf("frame %d: %v", i, e)
		}
	}
	rx := newRxBatch(8, 2048)
	n, errno := rx.recv(fds[1])
	if errno != 0 || n != 4 {
		t.Fatalf("received %d frames (%v), want 4", n, errno)
	}
	for i, want := range []int{1, 2, 4, 1} {
		if got := int(rx.hdrs[i].len); got != want || rx.bufs[i][0] != frames[[]int{0, 1, 3, 4}[i]][0] {
			t.Errorf("slot %d: %d bytes starting %d, want %d", i, got, rx.bufs[i][0], want)
		}
	}
	if _, errno := rx.recv(fds[1]); errno != syscall.EAGAIN {
		t.Errorf("drained socket: %v, want EAGAIN", errno)
	}
}
