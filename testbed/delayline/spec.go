// Package delayline is a userspace link emulator for kernels without sch_netem.
//
// A delayed link between nodes A and B is built as A <-> [link namespace: ifa, ifb] <-> B.
// The forwarder in the link namespace reads every frame arriving on one interface with an
// AF_PACKET socket, passes it through a per-direction Scheduler (loss, rate, queue limit,
// delay, jitter) and writes it out of the other interface at the computed departure time.
//
// The Scheduler is a pure function of (arrival time, frame size, seeded RNG), so the exact
// code the forwarder runs can be exercised offline by `delayline simulate` and unit tests.
package delayline

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Limits on spec values. They exist to catch unit mistakes ("delay=10s" meant as ms) and to
// keep integer arithmetic in the scheduler far from overflow, not because larger values
// could not be emulated.
const (
	MaxDelay     = 10 * time.Second
	MaxJitter    = 10 * time.Second
	MinRateBps   = 1e3   // 1 kbit/s: below this one frame takes longer than MaxDelay
	MaxRateBps   = 100e9 // 100 gbit/s: far above what a userspace path can forward anyway
	DefaultLimit = 1000  // same default as netem's limit and DirectionSpec.queue_packets
	MaxLimit     = 1_000_000
)

// Spec is the emulation applied to one direction of a link.
type Spec struct {
	Delay   time.Duration // constant one-way delay added after serialization
	Jitter  time.Duration // uniform random extra delay in [0, Jitter]; order is kept
	LossPct float64       // independent random loss, percent in [0, 100]
	RateBps float64       // serialization rate in bit/s; 0 means unlimited
	Limit   int           // bottleneck buffer in packets (only meaningful with a rate)
}

// ParamError names the offending parameter and its allowed range, so the CLI can print one
// clear line and exit 2 (the project-wide convention for usage errors).
type ParamError struct {
	Parameter string
	Value     string
	Allowed   string
}

func (e *ParamError) Error() string {
	return fmt.Sprintf("invalid %s=%q: allowed %s", e.Parameter, e.Value, e.Allowed)
}

// IsIdentity reports whether the spec changes nothing (frames are forwarded as they come).
func (s Spec) IsIdentity() bool {
	return s.Delay == 0 && s.Jitter == 0 && s.LossPct == 0 && s.RateBps == 0
}

// String renders the spec in the syntax ParseSpec accepts (round-trips exactly).
func (s Spec) String() string {
	var parts []string
	if s.Delay != 0 {
		parts = append(parts, "delay="+s.Delay.String())
	}
	if s.Jitter != 0 {
		parts = append(parts, "jitter="+s.Jitter.String())
	}
	if s.LossPct != 0 {
		parts = append(parts, "loss="+strconv.FormatFloat(s.LossPct, 'g', -1, 64))
	}
	if s.RateBps != 0 {
		parts = append(parts, "rate="+strconv.FormatFloat(s.RateBps, 'g', -1, 64)+"bit")
	}
	if s.Limit != DefaultLimit {
		parts = append(parts, "limit="+strconv.Itoa(s.Limit))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ",")
}

// ParseSpec parses "delay=10ms,jitter=1ms,loss=0.5,rate=100mbit,limit=1000". Every key is
// optional; "" and "none" mean no emulation. Durations use Go syntax (10ms, 250us, 1.5ms,
// 0); rate takes bit, kbit, mbit or gbit (decimal, as tc does); loss is a percentage with an
// optional "%".
func ParseSpec(text string) (Spec, error) {
	spec := Spec{Limit: DefaultLimit}
	text = strings.TrimSpace(text)
	if text == "" || text == "none" {
		return spec, nil
	}
	seen := map[string]bool{}
	for _, item := range strings.Split(text, ",") {
		key, value, ok := strings.Cut(strings.TrimSpace(item), "=")
		key = strings.ToLower(strings.TrimSpace(key))
		value = strings.TrimSpace(value)
		if !ok {
			return spec, &ParamError{"spec item", item, "key=value with key one of delay, jitter, loss, rate, limit"}
		}
		if seen[key] {
			return spec, &ParamError{key, value, "at most once per spec"}
		}
		seen[key] = true
		var err error
		switch key {
		case "delay":
			spec.Delay, err = parseDuration(key, value, MaxDelay)
		case "jitter":
			spec.Jitter, err = parseDuration(key, value, MaxJitter)
		case "loss":
			spec.LossPct, err = parseLoss(value)
		case "rate":
			spec.RateBps, err = parseRate(value)
		case "limit":
			spec.Limit, err = parseLimit(value)
		default:
			err = &ParamError{"spec key", key, "one of delay, jitter, loss, rate, limit"}
		}
		if err != nil {
			return spec, err
		}
	}
	return spec, nil
}

func parseDuration(key, value string, max time.Duration) (time.Duration, error) {
	allowed := fmt.Sprintf("0 to %s as a duration with unit (10ms, 250us, 1.5ms)", max)
	if value == "0" {
		return 0, nil
	}
	d, err := time.ParseDuration(value)
	if err != nil || d < 0 || d > max {
		return 0, &ParamError{key, value, allowed}
	}
	return d, nil
}

func parseLoss(value string) (float64, error) {
	allowed := "a percentage from 0 to 100 (0.5 or 0.5%)"
	f, err := strconv.ParseFloat(strings.TrimSuffix(value, "%"), 64)
	if err != nil || math.IsNaN(f) || f < 0 || f > 100 {
		return 0, &ParamError{"loss", value, allowed}
	}
	return f, nil
}

func parseRate(value string) (float64, error) {
	allowed := "1kbit to 100gbit as a number with unit bit, kbit, mbit or gbit (100mbit)"
	lower := strings.ToLower(value)
	multipliers := []struct {
		suffix string
		mult   float64
	}{{"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}, {"bit", 1}}
	for _, m := range multipliers {
		if num, ok := strings.CutSuffix(lower, m.suffix); ok {
			f, err := strconv.ParseFloat(num, 64)
			if err != nil || math.IsNaN(f) {
				break
			}
			bps := f * m.mult
			if bps < MinRateBps || bps > MaxRateBps {
				break
			}
			return bps, nil
		}
	}
	return 0, &ParamError{"rate", value, allowed}
}

func parseLimit(value string) (int, error) {
	n, err := strconv.Atoi(value)
	if err != nil || n < 1 || n > MaxLimit {
		return 0, &ParamError{"limit", value, fmt.Sprintf("an integer from 1 to %d (packets)", MaxLimit)}
	}
	return n, nil
}
