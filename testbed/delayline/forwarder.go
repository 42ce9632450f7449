//go:build linux

package delayline

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

const (
	ethPAll              = 0x0003
	ethHeaderLen         = 14
	packetIgnoreOutgoing = 23      // PACKET_IGNORE_OUTGOING, Linux 4.20+
	smallFrame           = 2048    // smallest pooled buffer; covers MTU 1500 (and 2000) frames
	maxInFlight          = 1 << 18 // frames held at once; beyond this: dropped_overload
	// overloadSlack: with a rate, the forwarder's own backlog may hold this much time of
	// frames at that rate before it drops (see overloadLimit).
	overloadSlack = 100_000_000 // ns
)

// Config describes one forwarder: two interfaces and the emulation of each direction.
type Config struct {
	IfA, IfB   string
	A2B, B2A   Spec
	Seed       uint64
	SpinNs     int64 // in precise mode, busy-poll at most this long before a departure
	RTPriority int   // SCHED_FIFO priority in precise mode (see mode.go); 0: never
	RcvBuf     int   // socket receive buffer, bytes (forced with SO_RCVBUFFORCE as root)
	SndBuf     int
	NoRing     bool                             // receive with recvmmsg instead of a PACKET_RX_RING (ring.go)
	Warn       func(format string, args ...any) // one-off warnings (oversize frames); may be nil
}

type packetSocket struct {
	name    string
	fd      int
	ifindex int
	mtu     int
	ring    *rxRing // nil: receive with recvmmsg
	ringErr error   // why there is no ring, if one was asked for
}

type packet struct {
	data      []byte
	departure int64
}

// direction forwards one way (in -> out). One goroutine on its own OS thread owns all of
// it: the scheduler, the FIFO of frames waiting for their departure, the buffers.
type direction struct {
	name       string
	in, out    *packetSocket
	sched      *Scheduler
	fifo       packetRing
	free       [][]byte // recycled frame buffers, so steady state allocates nothing
	stats      DirectionStats
	inFlight   atomic.Int64 // fifo length, readable by the stats writer
	limit      int          // the spec's queue limit, also bounding the forwarder's own backlog
	spinNs     int64
	rtPriority int
	realtime   atomic.Bool // SCHED_FIFO was granted at least once (it can fail in containers)
	mode       modeState
	wake       overshootEstimator
	warn       func(format string, args ...any)
	warned     bool
	fatal      chan<- error
	bufSize    int      // frame buffer size: the ingress MTU's frames fit
	rx         *rxBatch // receive slots (recvmmsg)
	tx         *txBatch // send slots (sendmmsg)
	txFrames   [][]byte // frames of the batch being sent
	txPackets  []packet
}

// Forwarder is a running two-port L2 forwarder with per-direction emulation.
type Forwarder struct {
	cfg   Config
	a, b  *packetSocket
	a2b   *direction
	b2a   *direction
	mu    sync.Mutex // serializes stats snapshots (kernel counters are read-and-reset)
	fatal chan error
}

// openPacketSocket opens an AF_PACKET/ETH_P_ALL socket bound to ifname, in promiscuous mode
// (frames are addressed to the far node's MAC, not ours), ignoring our own transmissions.
func openPacketSocket(flagName, ifname string, rcvbuf, sndbuf int, useRing bool) (*packetSocket, error) {
	iface, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, &ParamError{flagName, ifname, "an existing interface in this network namespace"}
	}
	proto := htons(ethPAll)
	// Protocol 0 at socket(): receive nothing until bind() names the interface and ETH_P_ALL,
	// so no frame from another interface can slip in between.
	fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket(AF_PACKET) for %s: %w (needs CAP_NET_RAW)", ifname, err)
	}
	ok := false
	defer func() {
		if !ok {
			syscall.Close(fd)
		}
	}()
	// Buffers first: bursts (a TCP window arriving at once) must not overflow before we read.
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, rcvbuf); err != nil {
		_ = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf)
	}
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_SNDBUFFORCE, sndbuf); err != nil {
		_ = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_SNDBUF, sndbuf)
	}
	// Best effort: the kernel then never hands us our own transmissions; we also check
	// sll_pkttype below for kernels without this option.
	_ = syscall.SetsockoptInt(fd, syscall.SOL_PACKET, packetIgnoreOutgoing, 1)
	// Kernel receive timestamps: a frame's delay then counts from when it entered the link
	// namespace, not from when this thread got to read it (a wake-up costs 50-150 us on a
	// VM, per direction, which would otherwise add to every RTT).
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_TIMESTAMPNS, 1); err != nil {
		return nil, fmt.Errorf("SO_TIMESTAMPNS on %s: %w", ifname, err)
	}
	ps := &packetSocket{name: ifname, fd: fd, ifindex: iface.Index, mtu: iface.MTU}
	if useRing {
		ps.ring, ps.ringErr = setupRxRing(fd, iface.MTU)
	}
	sll := &syscall.SockaddrLinklayer{Protocol: proto, Ifindex: iface.Index}
	if err := syscall.Bind(fd, sll); err != nil {
		return nil, fmt.Errorf("bind AF_PACKET socket to %s: %w", ifname, err)
	}
	mreq := packetMreq{Ifindex: int32(iface.Index), Type: syscall.PACKET_MR_PROMISC}
	if _, _, errno := syscall.Syscall6(syscall.SYS_SETSOCKOPT, uintptr(fd), syscall.SOL_PACKET,
		syscall.PACKET_ADD_MEMBERSHIP, uintptr(unsafe.Pointer(&mreq)), unsafe.Sizeof(mreq), 0); errno != 0 {
		return nil, fmt.Errorf("promiscuous mode on %s: %w", ifname, errno)
	}
	ok = true
	return ps, nil
}

type packetMreq struct {
	Ifindex int32
	Type    uint16
	Alen    uint16
	Address [8]byte
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// kernelDrops reads (and thereby resets) the socket's PACKET_STATISTICS drop counter.
func (s *packetSocket) kernelDrops() uint64 {
	var st struct{ Packets, Drops uint32 }
	size := uint32(unsafe.Sizeof(st))
	if _, _, errno := syscall.Syscall6(syscall.SYS_GETSOCKOPT, uintptr(s.fd), syscall.SOL_PACKET,
		syscall.PACKET_STATISTICS, uintptr(unsafe.Pointer(&st)), uintptr(unsafe.Pointer(&size)), 0); errno != 0 {
		return 0
	}
	return uint64(st.Drops)
}

// NewForwarder opens and binds both sockets. When it returns without error the forwarder is
// receiving (frames queue in the socket buffers) and the caller may signal readiness.
func NewForwarder(cfg Config) (*Forwarder, error) {
	if cfg.IfA == cfg.IfB {
		return nil, &ParamError{"--if-b", cfg.IfB, "an interface different from --if-a"}
	}
	if cfg.RcvBuf <= 0 {
		cfg.RcvBuf = 32 << 20
	}
	if cfg.SndBuf <= 0 {
		cfg.SndBuf = 4 << 20
	}
	a, err := openPacketSocket("--if-a", cfg.IfA, cfg.RcvBuf, cfg.SndBuf, !cfg.NoRing)
	if err != nil {
		return nil, err
	}
	b, err := openPacketSocket("--if-b", cfg.IfB, cfg.RcvBuf, cfg.SndBuf, !cfg.NoRing)
	if err != nil {
		syscall.Close(a.fd)
		return nil, err
	}
	for _, s := range []*packetSocket{a, b} {
		if s.ringErr != nil && cfg.Warn != nil {
			cfg.Warn("%s: no receive ring, using recvmmsg: %v", s.name, s.ringErr)
		}
	}
	f := &Forwarder{cfg: cfg, a: a, b: b, fatal: make(chan error, 2)}
	mk := func(name string, in, out *packetSocket, spec Spec) *direction {
		bufSize := max(smallFrame, in.mtu+ethHeaderLen)
		return &direction{
			name: name, in: in, out: out, sched: NewScheduler(spec, DirectionSeed(cfg.Seed, name)),
			limit: overloadLimit(spec), spinNs: cfg.SpinNs, rtPriority: cfg.RTPriority, warn: cfg.Warn,
			fatal: f.fatal, bufSize: bufSize, rx: newRxBatch(rxSlots, bufSize), tx: newTxBatch(sendBatch),
			txFrames: make([][]byte, 0, sendBatch), txPackets: make([]packet, 0, sendBatch),
		}
	}
	f.a2b = mk("a2b", a, b, cfg.A2B)
	f.b2a = mk("b2a", b, a, cfg.B2A)
	return f, nil
}

// Start launches one event loop per direction. They run until the process exits; the
// forwarder is meant to live exactly as long as its process.
func (f *Forwarder) Start() {
	go f.a2b.run()
	go f.b2a.run()
}

// Fatal delivers an error when forwarding cannot continue: an interface was deleted (its
// namespace or its peer went away). A link going down is not fatal: frames are dropped as
// tx_errors until it comes back, as on a real cable.
func (f *Forwarder) Fatal() <-chan error { return f.fatal }

type pollFd struct {
	fd      int32
	events  int16
	revents int16
}

// overloadLimit bounds the forwarder's own backlog of frames already due but not yet sent.
// Without a rate that is the spec's limit: the input is then unbounded, the emulator itself
// is the bottleneck and must drop like one, so that the calibration gate sees it (measured
// with a 100 ms bound there: unshaped TCP ran into the backlog without a single drop, 16 ms
// late at the median, and nothing would have flagged that the emulator set the rate). With a rate the scheduler's queue already drops
// everything above the rate, so the backlog can only grow while this thread is not running
// (CPU stalls of a few to tens of ms on a shared 2-core machine): the bound is then at least
// overloadSlack of frames at that rate (8,333 at 1 Gbit/s), so a stall makes frames late,
// which is measured, instead of dropping them, which would cut TCP's rate.
func overloadLimit(spec Spec) int {
	limit := max(spec.Limit, 1)
	if spec.RateBps > 0 {
		limit = max(limit, int(spec.RateBps*overloadSlack/1e9/(1500*8)))
	}
	return min(limit, maxInFlight)
}

const (
	pollIn    = 0x1
	rxSlots   = 64  // frames per recvmmsg call
	recvBatch = 128 // frames read per wake-up before departures are looked at again
	sendBatch = 64  // frames sent before the socket is read again (more than recvBatch
	// would let a slow egress hide a backlog in the kernel socket buffer, where no limit
	// applies and arrival times are lost; see receiveOne's overload check)
)

// run is the event loop of one direction, on a dedicated OS thread: send the frames that are
// due, then ppoll(2) the ingress socket with a timeout that ends at the next departure, then
// read what arrived. Receiving and sending on the same thread means a frame costs one
// wake-up at arrival and one at departure, with no cross-thread hand-off (each wake-up of an
// idle vCPU costs tens of microseconds on a VM). ppoll's timeout is an hrtimer, so with the
// thread's timer slack at 1 ns it wakes close to the departure, unlike Go timers (netpoller,
// 1 ms granularity). Close is still ~75 us late on a loaded VM; so by default the loop asks
// to wake early by a running estimate of that overshoot (its median, at most SpinNs) and
// busy-polls the socket for the rest when it wakes early. Median lateness is then ~1-5 us
// instead of ~75 us, for a few percent more CPU. That, and SCHED_FIFO, only while the thread
// is lightly loaded (precise mode, see mode.go).
func (d *direction) run() {
	runtime.LockOSThread()
	setThreadTimerSlack(1)
	d.initMode(monoNow())
	pfd := pollFd{fd: int32(d.in.fd), events: pollIn}
	var ts syscall.Timespec
	for {
		d.adaptMode(monoNow())
		moreDue := d.sendDue()
		tsp := uintptr(0) // nothing queued: wait for a frame indefinitely
		var wakeAt int64  // when a timed sleep was asked to end; 0 if not sleeping
		if moreDue {
			ts = syscall.Timespec{} // just look at the socket, then keep sending
			tsp = uintptr(unsafe.Pointer(&ts))
		} else if d.fifo.len() > 0 {
			now := monoNow()
			ahead := int64(0)
			if d.mode.precise {
				ahead = min(d.spinNs, d.wake.median)
			}
			sleep := d.fifo.front().departure - ahead - now
			ts = syscall.Timespec{}
			if sleep > 0 {
				ts = syscall.NsecToTimespec(sleep)
				wakeAt = now + sleep
			}
			tsp = uintptr(unsafe.Pointer(&ts))
		}
		pfd.revents = 0
		n, _, errno := syscall.Syscall6(syscall.SYS_PPOLL, uintptr(unsafe.Pointer(&pfd)), 1, tsp, 0, 0, 0)
		if errno != 0 && errno != syscall.EINTR {
			panic(fmt.Sprintf("delayline: ppoll on %s: %v", d.in.name, errno))
		}
		if n == 0 && errno == 0 && wakeAt != 0 {
			d.wake.observe(monoNow() - wakeAt)
		}
		if n > 0 && pfd.revents != 0 && d.in.ring != nil {
			d.receiveRing(recvBatch)
		} else if n > 0 && pfd.revents != 0 {
			for got := 0; got < recvBatch; {
				k, errno := d.rx.recv(d.in.fd)
				if errno == syscall.EINTR {
					continue
				}
				if errno != 0 {
					if errno != syscall.EAGAIN {
						d.receiveError(errno)
					}
					break
				}
				d.receiveBatch(k, time.Now()) // one reading of both clocks for the whole batch
				got += k
				if k < rxSlots {
					break // the socket is drained
				}
			}
		}
	}
}

// receiveError handles a failed read: after an interface was deleted the socket can never
// receive again, so report it and stop this loop; otherwise (ENETDOWN on a link set down)
// pause briefly so a persistent error cannot turn the loop into a busy spin at RT priority.
func (d *direction) receiveError(err error) {
	if _, lookErr := net.InterfaceByIndex(d.in.ifindex); lookErr != nil {
		d.fatal <- fmt.Errorf("%s: interface %s is gone: %v", d.name, d.in.name, err)
		select {} // park this goroutine; the process is exiting
	}
	ts := syscall.NsecToTimespec(1_000_000)
	_ = syscall.Nanosleep(&ts, nil)
}

// overshootEstimator tracks the median of how late a timed ppoll returns, by stochastic
// approximation (one step up when above, one down when below): constant memory, and it
// follows the machine's load within a few hundred sleeps. Waking early by the median makes
// the median departure exact while busy-polling only on the half of wake-ups that come
// early, and then only for the difference: a higher quantile would buy a lower p90 with
// much more spinning (measured: +30-40% CPU at 100 Mbit/s of 1500-byte frames).
type overshootEstimator struct{ median int64 }

func (e *overshootEstimator) observe(overshoot int64) {
	const step = 2000 // ns
	if overshoot > e.median {
		e.median += step
	} else {
		e.median -= step
	}
	e.median = min(max(e.median, 0), 10_000_000)
}

// receiveBatch timestamps and schedules the k frames recvmmsg just put into the receive
// slots; clock was read right after the call returned.
func (d *direction) receiveBatch(k int, clock time.Time) {
	readAt := int64(clock.Sub(clockBase))
	for i := 0; i < k; i++ {
		if d.rx.names[i].Pkttype == syscall.PACKET_OUTGOING {
			continue // our own transmission (or the link namespace's stack): never loop it
		}
		arrival := arrivalTime(clock, d.rx.control(i))
		d.receive(i, int(d.rx.hdrs[i].len), readAt, arrival)
	}
}

// receive handles the frame of n bytes (its real length, even if it was cut to the
// buffer) in receive slot i: if it is to be delivered, the slot's buffer moves into the
// FIFO (no copy) and the slot gets a fresh one.
func (d *direction) receive(i, n int, readAt, arrival int64) {
	departure, ok := d.admit(n, len(d.rx.bufs[i]), readAt, arrival)
	if !ok {
		return
	}
	d.fifo.push(packet{data: d.rx.bufs[i][:n], departure: departure})
	d.inFlight.Store(int64(d.fifo.len()))
	d.rx.setBuf(i, d.buffer())
}

// receiveRing takes up to limit frames from the receive ring, copying each one to be
// delivered into a pooled buffer, and hands every slot back to the kernel.
func (d *direction) receiveRing(limit int) {
	r := d.in.ring
	clock := time.Now()
	for got := 0; got < limit; got++ {
		h := r.next()
		if h == nil {
			return
		}
		if r.pktType(h) != syscall.PACKET_OUTGOING { // never loop our own transmissions
			stamp := int64(h.sec)*1e9 + int64(h.nsec)
			if stamp > clock.UnixNano() {
				clock = time.Now() // it arrived after our clock reading: read again
			}
			readAt := int64(clock.Sub(clockBase))
			data := r.frame(h)
			departure, ok := d.admit(int(h.len), len(data), readAt, arrivalFromStamp(clock, stamp))
			if ok {
				buf := d.buffer()[:len(data)]
				copy(buf, data)
				d.fifo.push(packet{data: buf, departure: departure})
				d.inFlight.Store(int64(d.fifo.len()))
			}
		}
		r.release(h)
	}
}

// buffer returns a frame buffer of bufSize bytes from the pool (steady state allocates
// nothing).
func (d *direction) buffer() []byte {
	if k := len(d.free); k > 0 {
		buf := d.free[k-1]
		d.free = d.free[:k-1]
		return buf
	}
	return make([]byte, d.bufSize)
}

// admit counts a received frame of n bytes, of which the receive path holds have, and
// decides its fate: the departure time, or ok == false when it is dropped (counted here).
func (d *direction) admit(n, have int, readAt, arrival int64) (departure int64, ok bool) {
	d.stats.rxWait.record(readAt - arrival)
	d.stats.RxPackets.Add(1)
	d.stats.RxBytes.Add(uint64(n))
	if n > d.in.mtu+ethHeaderLen {
		d.stats.Oversize.Add(1)
		if !d.warned && d.warn != nil {
			d.warned = true
			d.warn("%s: received a %d-byte frame on %s (MTU %d): offloads are on; run "+
				"'ethtool -K IF tx off tso off gso off gro off' on both veth pairs", d.name, n, d.in.name, d.in.mtu)
		}
	}
	if n > have || n > d.bufSize {
		d.stats.TxErrors.Add(1) // truncated: cannot be forwarded whole
		return 0, false
	}
	// Overload: the frames already due but not yet sent are this forwarder's own backlog
	// (egress slower than ingress). Bound it like any queue (overloadLimit) instead of
	// letting TCP fill an unbounded FIFO with seconds of delay; count it separately so a run
	// can tell that the emulator, not the emulated link, was the bottleneck.
	if d.fifo.len() >= maxInFlight || d.fifo.countDue(readAt) >= d.limit {
		d.stats.DroppedOverload.Add(1)
		return 0, false
	}
	departure, verdict := d.sched.Schedule(arrival, n)
	switch verdict {
	case DropLoss:
		d.stats.DroppedLoss.Add(1)
		return 0, false
	case DropQueue:
		d.stats.DroppedQueue.Add(1)
		return 0, false
	}
	return departure, true
}

// sendDue writes out, in one sendmmsg, up to sendBatch queued frames whose departure time
// has come, and reports whether more are due. Departures are non-decreasing (the scheduler
// keeps order), so only the head needs checking.
func (d *direction) sendDue() bool {
	defer func() { d.inFlight.Store(int64(d.fifo.len())) }()
	now := monoNow()
	d.txFrames, d.txPackets = d.txFrames[:0], d.txPackets[:0]
	for d.fifo.len() > 0 && len(d.txFrames) < sendBatch {
		p := *d.fifo.front() // a copy: pop clears the slot
		if p.departure > now {
			break
		}
		d.fifo.pop()
		d.stats.late.record(now - p.departure)
		d.txFrames = append(d.txFrames, p.data)
		d.txPackets = append(d.txPackets, p)
	}
	if len(d.txFrames) > 0 {
		d.tx.send(d.out.fd, d.txFrames, d.sent)
		for i, p := range d.txPackets {
			if cap(p.data) == d.bufSize && len(d.free) < 4096 {
				d.free = append(d.free, p.data[:cap(p.data)])
			}
			d.txFrames[i], d.txPackets[i] = nil, packet{}
		}
	}
	return d.fifo.len() > 0 && d.fifo.front().departure <= now
}

// sent accounts for frame i of the batch being sent.
func (d *direction) sent(i int, errno syscall.Errno) {
	if errno != 0 {
		d.stats.TxErrors.Add(1) // e.g. ENOBUFS: the peer veth's backlog is full
		return
	}
	d.stats.TxPackets.Add(1)
	d.stats.TxBytes.Add(uint64(len(d.txFrames[i])))
}

// packetRing is a growable FIFO of packets.
type packetRing struct {
	buf        []packet
	head, size int
}

func (r *packetRing) len() int       { return r.size }
func (r *packetRing) front() *packet { return &r.buf[r.head] }
func (r *packetRing) pop()           { r.buf[r.head] = packet{}; r.head = (r.head + 1) % len(r.buf); r.size-- }

// countDue is the number of queued packets with departure <= now (binary search: the ring
// is sorted by departure).
func (r *packetRing) countDue(now int64) int {
	lo, hi := 0, r.size
	for lo < hi {
		mid := (lo + hi) / 2
		if r.buf[(r.head+mid)%len(r.buf)].departure <= now {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo
}

func (r *packetRing) push(p packet) {
	if r.size == len(r.buf) {
		grown := make([]packet, max(64, 2*len(r.buf)))
		for i := 0; i < r.size; i++ {
			grown[i] = r.buf[(r.head+i)%len(r.buf)]
		}
		r.buf, r.head = grown, 0
	}
	r.buf[(r.head+r.size)%len(r.buf)] = p
	r.size++
}

// Report snapshots the statistics of both directions.
func (f *Forwarder) Report() Report {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.a2b.stats.KernelDrops.Add(f.a.kernelDrops())
	f.b2a.stats.KernelDrops.Add(f.b.kernelDrops())
	now := monoNow()
	return Report{
		Version: 1, IfA: f.cfg.IfA, IfB: f.cfg.IfB, Seed: f.cfg.Seed,
		SpinUs: float64(f.cfg.SpinNs) / 1000, RTPrio: f.cfg.RTPriority,
		RTActive: f.a2b.realtime.Load() && f.b2a.realtime.Load(),
		A2B:      f.a2b.stats.report(f.a2b.sched.Spec(), int(f.a2b.inFlight.Load()), now),
		B2A:      f.b2a.stats.report(f.b2a.sched.Spec(), int(f.b2a.inFlight.Load()), now),
	}
}

// WriteStats writes the statistics as JSON to path, atomically.
func (f *Forwarder) WriteStats(path string) error {
	if path == "" {
		return nil
	}
	if err := writeFileAtomic(path, marshalReport(f.Report())); err != nil {
		return fmt.Errorf("writing stats file: %w", err)
	}
	return nil
}

// IsParamError reports whether err is a usage error (exit status 2).
func IsParamError(err error) bool {
	var pe *ParamError
	return errors.As(err, &pe)
}
