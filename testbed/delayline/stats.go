package delayline

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sync/atomic"
)

// histBuckets: 1 us buckets up to 100 ms; longer times fall in the last bucket.
const histBuckets = 100_000

// histogram of durations with 1 us resolution, written by one goroutine and read by the
// stats writer concurrently (atomics: a snapshot may be a few counts off, never torn).
type histogram struct {
	buckets [histBuckets]atomic.Uint64
	max     atomic.Int64
}

func (h *histogram) record(ns int64) {
	ns = max(ns, 0)
	h.buckets[min(ns/1000, histBuckets-1)].Add(1)
	if ns > h.max.Load() {
		h.max.Store(ns) // single writer: no lost update
	}
}

// summary returns p50, p99 (upper bucket edges) and max, in microseconds.
func (h *histogram) summary() (p50, p99, maxUs float64) {
	var total uint64
	counts := make([]uint64, histBuckets)
	for i := range counts {
		counts[i] = h.buckets[i].Load()
		total += counts[i]
	}
	if total == 0 {
		return 0, 0, 0
	}
	return quantileBucket(counts, total, 0.50), quantileBucket(counts, total, 0.99),
		float64(h.max.Load()) / 1000
}

// quantileBucket returns the upper edge (us) of the bucket holding quantile q.
func quantileBucket(counts []uint64, total uint64, q float64) float64 {
	rank := uint64(q*float64(total-1)) + 1
	var seen uint64
	for i, c := range counts {
		seen += c
		if seen >= rank {
			return float64(i + 1)
		}
	}
	return float64(len(counts))
}

// DirectionStats counts what one direction did. Updated with atomics by the direction's
// event loop and read by the stats writer at any time.
type DirectionStats struct {
	RxPackets         atomic.Uint64 // frames received on the ingress interface (not our own)
	RxBytes           atomic.Uint64
	TxPackets         atomic.Uint64 // frames forwarded out of the egress interface
	TxBytes           atomic.Uint64
	DroppedLoss       atomic.Uint64 // dropped by emulated random loss
	DroppedQueue      atomic.Uint64 // dropped by the emulated bottleneck buffer (limit)
	DroppedOverload   atomic.Uint64 // the forwarder fell behind: its backlog of due frames reached limit
	TxErrors          atomic.Uint64 // write(2) failed (e.g. frame larger than the egress MTU)
	Oversize          atomic.Uint64 // received frames longer than MTU + 14: offloads left on
	KernelDrops       atomic.Uint64 // dropped by the kernel before we read them (socket buffer full)
	ModeSwitches      atomic.Uint64 // precise <-> throughput mode changes (mode.go)
	ThroughputModeNs  atomic.Uint64 // time spent in throughput mode, closed periods
	inThroughputSince atomic.Int64  // monoNow when the current throughput period began; 0 if precise
	late              histogram     // actual minus scheduled departure
	rxWait            histogram     // read time minus kernel receive stamp (compensated)
}

// DirectionReport is the JSON form of one direction's statistics.
type DirectionReport struct {
	Spec            string  `json:"spec"`
	RxPackets       uint64  `json:"rx_packets"`
	RxBytes         uint64  `json:"rx_bytes"`
	TxPackets       uint64  `json:"tx_packets"`
	TxBytes         uint64  `json:"tx_bytes"`
	DroppedLoss     uint64  `json:"dropped_loss"`
	DroppedQueue    uint64  `json:"dropped_queue"`
	DroppedOverload uint64  `json:"dropped_overload"`
	TxErrors        uint64  `json:"tx_errors"`
	Oversize        uint64  `json:"oversize"`
	KernelDrops     uint64  `json:"kernel_drops"`
	InFlight        int     `json:"in_flight"`
	LateP50Us       float64 `json:"late_p50_us"` // how late frames left vs their scheduled time:
	LateP99Us       float64 `json:"late_p99_us"` // the emulator's own timing error
	LateMaxUs       float64 `json:"late_max_us"`
	RxWaitP50Us     float64 `json:"rx_wait_p50_us"` // how long frames waited in the socket
	RxWaitP99Us     float64 `json:"rx_wait_p99_us"` // before being read (compensated for)
	ModeSwitches    uint64  `json:"mode_switches"`
	ThroughputMs    float64 `json:"throughput_mode_ms"` // time without SCHED_FIFO and busy-poll
}

func (d *DirectionStats) report(spec Spec, inFlight int, now int64) DirectionReport {
	r := DirectionReport{
		Spec:            spec.String(),
		RxPackets:       d.RxPackets.Load(),
		RxBytes:         d.RxBytes.Load(),
		TxPackets:       d.TxPackets.Load(),
		TxBytes:         d.TxBytes.Load(),
		DroppedLoss:     d.DroppedLoss.Load(),
		DroppedQueue:    d.DroppedQueue.Load(),
		DroppedOverload: d.DroppedOverload.Load(),
		TxErrors:        d.TxErrors.Load(),
		Oversize:        d.Oversize.Load(),
		KernelDrops:     d.KernelDrops.Load(),
		InFlight:        inFlight,
	}
	r.LateP50Us, r.LateP99Us, r.LateMaxUs = d.late.summary()
	r.RxWaitP50Us, r.RxWaitP99Us, _ = d.rxWait.summary()
	r.ModeSwitches = d.ModeSwitches.Load()
	throughputNs := d.ThroughputModeNs.Load()
	if since := d.inThroughputSince.Load(); since != 0 && now > since {
		throughputNs += uint64(now - since)
	}
	r.ThroughputMs = float64(throughputNs) / 1e6
	return r
}

// Report is the whole stats file.
type Report struct {
	Version  int             `json:"version"`
	IfA      string          `json:"if_a"`
	IfB      string          `json:"if_b"`
	Seed     uint64          `json:"seed"`
	SpinUs   float64         `json:"spin_us"`
	RTPrio   int             `json:"rt_priority"` // requested SCHED_FIFO priority (0: none)
	RTActive bool            `json:"rt_active"`   // both forwarding threads got it
	A2B      DirectionReport `json:"a2b"`
	B2A      DirectionReport `json:"b2a"`
}

// writeFileAtomic writes data so that a reader never sees a partial file.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(data)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}

func marshalReport(r Report) []byte {
	data, _ := json.MarshalIndent(r, "", "  ")
	return append(data, '\n')
}
