package delayline

import (
	"math"
	"testing"
)

func mustSpec(t *testing.T, text string) Spec {
	t.Helper()
	spec, err := ParseSpec(text)
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

func TestConstantDelayShiftsExactly(t *testing.T) {
	s := NewScheduler(mustSpec(t, "delay=10ms"), 1)
	for i := int64(0); i < 1000; i++ {
		arrival := i * 37_000
		dep, v := s.Schedule(arrival, 1514)
		if v != Deliver || dep != arrival+10_000_000 {
			t.Fatalf("frame %d: (%d, %v), want (%d, deliver)", i, dep, v, arrival+10_000_000)
		}
	}
}

func TestIdentityDepartsOnArrival(t *testing.T) {
	s := NewScheduler(mustSpec(t, "none"), 1)
	for _, a := range []int64{0, 0, 5, 1_000_000} {
		if dep, v := s.Schedule(a, 60); v != Deliver || dep != a {
			t.Fatalf("arrival %d: (%d, %v)", a, dep, v)
		}
	}
}

func TestJitterKeepsOrderAndBounds(t *testing.T) {
	spec := mustSpec(t, "delay=10ms,jitter=5ms")
	s := NewScheduler(spec, 7)
	var last int64
	spread := map[int64]bool{}
	for i := int64(0); i < 20000; i++ {
		arrival := i * 100_000 // 0.1 ms apart: jitter of 5 ms would reorder without the rule
		dep, v := s.Schedule(arrival, 100)
		if v != Deliver {
			t.Fatal("dropped without loss or rate")
		}
		if dep < last {
			t.Fatalf("frame %d departs at %d before the previous one at %d", i, dep, last)
		}
		if dep < arrival+int64(spec.Delay) {
			t.Fatalf("frame %d departs %d ns after arrival, less than the delay", i, dep-arrival)
		}
		// Order-keeping may push a frame past arrival+delay+jitter only up to the previous
		// departure, which itself is bounded by its own arrival+delay+jitter.
		if dep > arrival+int64(spec.Delay+spec.Jitter) {
			t.Fatalf("frame %d departs %d ns after arrival, more than delay+jitter", i, dep-arrival)
		}
		last = dep
	}
	// Frames further apart than the jitter never wait for each other: the extra delay is
	// then uniform over [0, jitter]. (Dense traffic piles up near delay+jitter instead.)
	s = NewScheduler(spec, 7)
	for i := int64(0); i < 5000; i++ {
		arrival := i * 10_000_000
		dep, _ := s.Schedule(arrival, 100)
		spread[(dep-arrival-int64(spec.Delay))/1_000_000] = true
	}
	if len(spread) < 5 {
		t.Fatalf("jitter does not spread over [0, 5ms]: 1 ms buckets %v", spread)
	}
}

func TestRateSpacesBackToBackFrames(t *testing.T) {
	s := NewScheduler(mustSpec(t, "rate=100mbit,delay=1ms"), 1)
	// 1500 bytes at 100 Mbit/s: 120 us each.
	for i := int64(0); i < 50; i++ {
		dep, v := s.Schedule(0, 1500)
		want := (i+1)*120_000 + 1_000_000
		if v != Deliver || dep != want {
			t.Fatalf("frame %d: (%d, %v), want %d", i, dep, v, want)
		}
	}
	// After the queue drained, a frame is serialized from its own arrival.
	dep, _ := s.Schedule(100_000_000, 1000)
	if want := int64(100_000_000 + 80_000 + 1_000_000); dep != want {
		t.Fatalf("idle frame departs %d, want %d", dep, want)
	}
}

func TestQueueLimitDropsExcess(t *testing.T) {
	s := NewScheduler(mustSpec(t, "rate=10mbit,limit=10"), 1)
	delivered, dropped := 0, 0
	for i := 0; i < 100; i++ {
		if _, v := s.Schedule(0, 1250); v == DropQueue {
			dropped++
		} else {
			delivered++
		}
	}
	if delivered != 10 || dropped != 90 {
		t.Fatalf("delivered %d dropped %d, want 10 and 90", delivered, dropped)
	}
	// 1250 bytes at 10 Mbit/s = 1 ms each; at 1.5 ms one slot has freed up (tx_end 1 ms).
	if _, v := s.Schedule(1_500_000, 1250); v != Deliver {
		t.Fatal("frame after a departure was dropped")
	}
	if _, v := s.Schedule(1_500_000, 1250); v != DropQueue {
		t.Fatal("frame beyond the limit was accepted")
	}
}

func TestQueueLimitIgnoresDelayedFrames(t *testing.T) {
	// Frames already serialized but still in the delay do not occupy the buffer.
	s := NewScheduler(mustSpec(t, "rate=1gbit,delay=1s,limit=2"), 1)
	for i := int64(0); i < 1000; i++ {
		if _, v := s.Schedule(i*1_000_000, 1500); v != Deliver {
			t.Fatalf("frame %d dropped with an idle bottleneck", i)
		}
	}
}

func TestLoss(t *testing.T) {
	count := func(spec string, n int) int {
		s := NewScheduler(mustSpec(t, spec), 42)
		lost := 0
		for i := 0; i < n; i++ {
			if _, v := s.Schedule(int64(i), 100); v == DropLoss {
				lost++
			}
		}
		return lost
	}
	if got := count("loss=0", 10000); got != 0 {
		t.Fatalf("loss=0 lost %d", got)
	}
	if got := count("loss=100", 10000); got != 10000 {
		t.Fatalf("loss=100 lost %d of 10000", got)
	}
	n, p := 20000, 0.3
	got := float64(count("loss=30", n))
	sigma := math.Sqrt(float64(n) * p * (1 - p))
	if math.Abs(got-float64(n)*p) > 5*sigma {
		t.Fatalf("loss=30 lost %v of %d, outside 5 sigma of %v", got, n, float64(n)*p)
	}
}

func TestSameSeedSameSchedule(t *testing.T) {
	run := func(seed uint64) []int64 {
		s := NewScheduler(mustSpec(t, "delay=5ms,jitter=2ms,loss=10,rate=50mbit,limit=50"), seed)
		var out []int64
		for i := int64(0); i < 5000; i++ {
			dep, v := s.Schedule(i*50_000, 200+int(i%1300))
			out = append(out, dep*4+int64(v))
		}
		return out
	}
	a, b, c := run(9), run(9), run(10)
	same, differs := true, false
	for i := range a {
		same = same && a[i] == b[i]
		differs = differs || a[i] != c[i]
	}
	if !same || !differs {
		t.Fatalf("same seed identical: %v; other seed differs: %v", same, differs)
	}
}

func TestArrivalGoingBackIsClamped(t *testing.T) {
	s := NewScheduler(mustSpec(t, "delay=1ms"), 1)
	s.Schedule(1_000_000, 100)
	if dep, _ := s.Schedule(500_000, 100); dep != 2_000_000 {
		t.Fatalf("departure %d, want 2000000", dep)
	}
}

func TestRingGrowsAndKeepsOrder(t *testing.T) {
	var r ring
	for i := int64(0); i < 100; i++ {
		r.push(i)
		if i%3 == 0 {
			r.pop()
		}
	}
	prev := int64(-1)
	for r.len() > 0 {
		if r.front() <= prev {
			t.Fatal("ring out of order")
		}
		prev = r.front()
		r.pop()
	}
}

func TestHistogramSummary(t *testing.T) {
	var h histogram
	for i := int64(1); i <= 1000; i++ {
		h.record(i * 1000) // 1 us .. 1 ms
	}
	h.record(-5)      // clamped to 0
	h.record(3_600e9) // an hour: last bucket, but max is exact
	p50, p99, maxUs := h.summary()
	if p50 < 495 || p50 > 505 || p99 < 985 || p99 > 995 || maxUs != 3_600e6 {
		t.Fatalf("p50 %v p99 %v max %v", p50, p99, maxUs)
	}
}
