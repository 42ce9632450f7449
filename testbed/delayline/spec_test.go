package delayline

import (
	"errors"
	"testing"
	"time"
)

func TestParseSpecValid(t *testing.T) {
	cases := map[string]Spec{
		"":     {Limit: DefaultLimit},
		"none": {Limit: DefaultLimit},
		"delay=10ms,jitter=1ms,loss=0.5,rate=100mbit,limit=1000": {
			Delay: 10 * time.Millisecond, Jitter: time.Millisecond, LossPct: 0.5, RateBps: 100e6, Limit: 1000,
		},
		"delay=250us":            {Delay: 250 * time.Microsecond, Limit: DefaultLimit},
		"delay=0":                {Limit: DefaultLimit},
		" loss=30% , rate=1gbit": {LossPct: 30, RateBps: 1e9, Limit: DefaultLimit},
		"rate=1.5Mbit":           {RateBps: 1.5e6, Limit: DefaultLimit},
		"rate=64kbit,limit=5":    {RateBps: 64e3, Limit: 5},
		"rate=1e+08bit":          {RateBps: 1e8, Limit: DefaultLimit},
	}
	for text, want := range cases {
		got, err := ParseSpec(text)
		if err != nil {
			t.Errorf("ParseSpec(%q): %v", text, err)
			continue
		}
		if got != want {
			t.Errorf("ParseSpec(%q) = %+v, want %+v", text, got, want)
		}
	}
}

func TestParseSpecInvalidNamesParameter(t *testing.T) {
	cases := map[string]string{
		"delay=-1ms":          "delay",
		"delay=10":            "delay",
		"delay=11s":           "delay",
		"jitter=abc":          "jitter",
		"loss=101":            "loss",
		"loss=-0.1":           "loss",
		"loss=NaN":            "loss",
		"rate=0mbit":          "rate",
		"rate=100":            "rate",
		"rate=100mbps":        "rate",
		"rate=1000gbit":       "rate",
		"limit=0":             "limit",
		"limit=1.5":           "limit",
		"limit=2000000":       "limit",
		"color=blue":          "spec key",
		"delay":               "spec item",
		"delay=1ms,delay=2ms": "delay",
	}
	for text, param := range cases {
		_, err := ParseSpec(text)
		var pe *ParamError
		if !errors.As(err, &pe) {
			t.Errorf("ParseSpec(%q): err = %v, want a ParamError", text, err)
			continue
		}
		if pe.Parameter != param || pe.Allowed == "" {
			t.Errorf("ParseSpec(%q): parameter %q (allowed %q), want %q", text, pe.Parameter, pe.Allowed, param)
		}
	}
}

func TestSpecStringRoundTrips(t *testing.T) {
	for _, text := range []string{
		"none", "delay=10ms", "delay=1.5ms,jitter=250us,loss=0.5,rate=100mbit,limit=20", "rate=64kbit",
	} {
		spec, err := ParseSpec(text)
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseSpec(spec.String())
		if err != nil || again != spec {
			t.Errorf("%q -> %q -> %+v (%v), want %+v", text, spec.String(), again, err, spec)
		}
	}
}
