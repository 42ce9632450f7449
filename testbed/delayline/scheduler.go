package delayline

import (
	"math"
	"math/rand/v2"
)

// Verdict is what the scheduler decided for one frame.
type Verdict uint8

const (
	Deliver   Verdict = iota // send at the returned departure time
	DropLoss                 // dropped by random loss
	DropQueue                // dropped because the bottleneck buffer was full
)

func (v Verdict) String() string {
	switch v {
	case Deliver:
		return "deliver"
	case DropLoss:
		return "loss"
	case DropQueue:
		return "queue"
	}
	return "unknown"
}

// Scheduler computes, for each frame of one direction, whether it is dropped and when it
// leaves. It holds no sockets and reads no clock: times are nanoseconds on any monotonic
// timeline the caller chooses, so `delayline simulate` and the tests run the very code the
// forwarder runs. Not safe for concurrent use; the forwarder owns one per direction.
//
// The model, per frame (arrival a, size n bytes), in this order:
//
//  1. loss: dropped with probability LossPct/100 (drawn first, as netem does, so a lost
//     frame never occupies the buffer);
//  2. rate: tx_start = max(a, previous tx_end), tx_end = tx_start + n*8/RateBps. Frames whose
//     serialization has not finished by a form the backlog; if it already holds Limit frames
//     the new one is dropped ("queue"). Frames in flight over the delay do not count: Limit is
//     the bottleneck router's buffer, not the wire. (netem's limit counts delayed packets
//     too, which silently caps throughput at limit/RTT for long, fast links.) Without a
//     rate, tx_end = a and the limit never applies;
//  3. delay and jitter: deliver = tx_end + Delay + U[0, Jitter];
//  4. order: departure = max(deliver, previous departure), so jitter never reorders frames
//     (TCP would otherwise see spurious reordering that real access links rarely produce).
type Scheduler struct {
	spec          Spec
	rng           *rand.Rand
	lastTxEnd     int64
	lastDeparture int64
	lastArrival   int64
	backlog       ring // tx_end of accepted frames, oldest first
}

// NewScheduler returns a scheduler for spec whose random choices are fully determined by
// seed, so a run (or a simulation) can be replayed exactly.
func NewScheduler(spec Spec, seed uint64) *Scheduler {
	if spec.Limit <= 0 {
		spec.Limit = DefaultLimit
	}
	return &Scheduler{
		spec:          spec,
		rng:           rand.New(rand.NewPCG(seed, 0x64656c61796c696e)), // "delaylin"
		lastTxEnd:     math.MinInt64,
		lastDeparture: math.MinInt64,
		lastArrival:   math.MinInt64,
	}
}

// Spec returns the emulation this scheduler applies.
func (s *Scheduler) Spec() Spec { return s.spec }

// Backlog is the number of accepted frames still waiting for or in serialization at the
// last arrival seen.
func (s *Scheduler) Backlog() int { return s.backlog.len() }

// TxDuration is the serialization time of size bytes at the spec's rate, in nanoseconds
// (rounded to the nearest nanosecond; 0 without a rate).
func (s *Scheduler) TxDuration(size int) int64 {
	if s.spec.RateBps <= 0 {
		return 0
	}
	return int64(math.Round(float64(size) * 8 * 1e9 / s.spec.RateBps))
}

// Schedule decides the fate of one frame arriving at arrival (ns) with size bytes.
// Arrivals must not decrease; an earlier arrival than the previous one is treated as equal
// to it (the forwarder's monotonic clock never goes back; simulate rejects such input).
func (s *Scheduler) Schedule(arrival int64, size int) (departure int64, verdict Verdict) {
	if arrival < s.lastArrival {
		arrival = s.lastArrival
	}
	s.lastArrival = arrival
	if s.spec.LossPct > 0 && s.rng.Float64()*100 < s.spec.LossPct {
		return 0, DropLoss
	}
	txEnd := arrival
	if s.spec.RateBps > 0 {
		for s.backlog.len() > 0 && s.backlog.front() <= arrival {
			s.backlog.pop()
		}
		if s.backlog.len() >= s.spec.Limit {
			return 0, DropQueue
		}
		txStart := max(arrival, s.lastTxEnd)
		txEnd = txStart + s.TxDuration(size)
		s.lastTxEnd = txEnd
		s.backlog.push(txEnd)
	}
	departure = txEnd + int64(s.spec.Delay)
	if s.spec.Jitter > 0 {
		departure += s.rng.Int64N(int64(s.spec.Jitter) + 1)
	}
	departure = max(departure, s.lastDeparture)
	s.lastDeparture = departure
	return departure, Deliver
}

// ring is a growable FIFO of int64 without per-operation allocation.
type ring struct {
	buf        []int64
	head, size int
}

func (r *ring) len() int     { return r.size }
func (r *ring) front() int64 { return r.buf[r.head] }
func (r *ring) pop()         { r.head = (r.head + 1) % len(r.buf); r.size-- }
func (r *ring) push(v int64) {
	if r.size == len(r.buf) {
		grown := make([]int64, max(16, 2*len(r.buf)))
		for i := 0; i < r.size; i++ {
			grown[i] = r.buf[(r.head+i)%len(r.buf)]
		}
		r.buf, r.head = grown, 0
	}
	r.buf[(r.head+r.size)%len(r.buf)] = v
	r.size++
}

// DirectionSeed derives the scheduler seed of one direction ("a2b" or "b2a") of a forwarder
// run with --seed seed, so the two directions draw independent losses, and `delayline
// simulate --seed S --direction D` replays exactly what `run --seed S` did in direction D.
func DirectionSeed(seed uint64, direction string) uint64 {
	if direction == "b2a" {
		return seed*2 + 1
	}
	return seed * 2
}
