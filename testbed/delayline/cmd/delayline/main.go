// Command delayline is a userspace link emulator (delay, jitter, loss, rate, queue limit)
// for kernels without sch_netem. See package cfrbench/testbed/delayline.
//
//	delayline run --if-a IFA --if-b IFB --a2b SPEC --b2a SPEC [--seed N]
//	              [--stats-file F] [--ready-file F] [--spin-us N] [--rt-priority N]
//	              [--rx-ring=false]
//	delayline simulate --spec SPEC [--seed N] [--direction a2b|b2a] < "arrival_ns size_bytes" lines
//
// SPEC is "delay=10ms,jitter=1ms,loss=0.5,rate=100mbit,limit=1000" (every key optional).
// Usage errors print one line naming the parameter and its allowed range and exit 2.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"cfrbench/testbed/delayline"
)

const usage = `usage:
  delayline run --if-a IFA --if-b IFB [--a2b SPEC] [--b2a SPEC] [--seed N]
                [--stats-file F] [--ready-file F] [--spin-us N] [--rt-priority N]
                [--rx-ring=false]
  delayline simulate --spec SPEC [--seed N] [--direction a2b|b2a]
                     (stdin: "arrival_ns size_bytes" per line; stdout: "arrival_ns departure_ns"
                     or "arrival_ns drop loss|queue")
SPEC: delay=10ms,jitter=1ms,loss=0.5,rate=100mbit,limit=1000 (all keys optional; "none")`

// usageError is reported as one line with exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func main() {
	err := dispatch(os.Args[1:])
	if err == nil {
		return
	}
	fmt.Fprintln(os.Stderr, "delayline: "+err.Error())
	var ue *usageError
	if errors.As(err, &ue) || delayline.IsParamError(err) {
		os.Exit(2)
	}
	os.Exit(1)
}

func dispatch(args []string) error {
	if len(args) == 0 {
		return &usageError{"missing command: run or simulate\n" + usage}
	}
	switch args[0] {
	case "run":
		return runCmd(args[1:])
	case "simulate":
		return simulateCmd(args[1:], os.Stdin, os.Stdout)
	case "-h", "--help", "help":
		fmt.Println(usage)
		return nil
	}
	return &usageError{fmt.Sprintf("invalid command %q: allowed run, simulate", args[0])}
}

// newFlagSet returns a flag set that reports errors as one line instead of printing usage.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return &usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return &usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	}
	return nil
}

func parseSpecFlag(flagName, value string) (delayline.Spec, error) {
	spec, err := delayline.ParseSpec(value)
	if err != nil {
		return spec, fmt.Errorf("%s: %w", flagName, err)
	}
	return spec, nil
}

func parseSeed(value string) (uint64, error) {
	seed, err := strconv.ParseUint(value, 10, 64)
	if err != nil {
		return 0, &delayline.ParamError{Parameter: "--seed", Value: value, Allowed: "an integer from 0 to 2^64-1"}
	}
	return seed, nil
}

func runCmd(args []string) error {
	fs := newFlagSet("run")
	ifA := fs.String("if-a", "", "interface towards node A")
	ifB := fs.String("if-b", "", "interface towards node B")
	a2b := fs.String("a2b", "none", "emulation of frames from A to B")
	b2a := fs.String("b2a", "none", "emulation of frames from B to A")
	seedText := fs.String("seed", "0", "random seed (loss, jitter)")
	statsFile := fs.String("stats-file", "", "write JSON statistics here on exit and on SIGUSR1")
	readyFile := fs.String("ready-file", "", "create this file once both sockets are bound")
	spinUs := fs.Float64("spin-us", 200, "while lightly loaded, busy-poll at most N microseconds before a departure instead of sleeping (0: only sleep)")
	// SCHED_FIFO by default, but only while a direction's thread is lightly loaded (see
	// mode.go): on a shared machine other processes otherwise delay departures by
	// milliseconds at p99, while a busy RT thread would starve ksoftirqd and be throttled.
	// 10 stays below the kernel threads that use RT priorities (50 and up).
	rtPrio := fs.Int("rt-priority", 10, "SCHED_FIFO priority 1-99 for the forwarding threads while lightly loaded (0: never)")
	rxRing := fs.Bool("rx-ring", true, "receive through a PACKET_RX_RING (false: recvmmsg; both are batched)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	for _, f := range []struct{ name, value string }{{"--if-a", *ifA}, {"--if-b", *ifB}} {
		if f.value == "" || len(f.value) > 15 || strings.ContainsAny(f.value, "/ \t") {
			return &delayline.ParamError{Parameter: f.name, Value: f.value, Allowed: "an interface name of 1 to 15 characters"}
		}
	}
	specA2B, err := parseSpecFlag("--a2b", *a2b)
	if err != nil {
		return err
	}
	specB2A, err := parseSpecFlag("--b2a", *b2a)
	if err != nil {
		return err
	}
	seed, err := parseSeed(*seedText)
	if err != nil {
		return err
	}
	if *spinUs < 0 || *spinUs > 1000 {
		return &delayline.ParamError{Parameter: "--spin-us", Value: fmt.Sprint(*spinUs), Allowed: "0 to 1000 (microseconds)"}
	}
	if *rtPrio < 0 || *rtPrio > 99 {
		return &delayline.ParamError{Parameter: "--rt-priority", Value: fmt.Sprint(*rtPrio), Allowed: "0 (off) or 1 to 99"}
	}
	// Four goroutines sit in blocking syscalls on locked threads; spare Ps let each return
	// from its syscall without waiting for another to be rescheduled.
	runtime.GOMAXPROCS(max(runtime.NumCPU(), 4))

	// Subscribe before the sockets exist so a SIGTERM sent right after readiness is not lost.
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1)

	fwd, err := delayline.NewForwarder(delayline.Config{
		IfA: *ifA, IfB: *ifB, A2B: specA2B, B2A: specB2A, Seed: seed,
		SpinNs: int64(*spinUs * 1000), RTPriority: *rtPrio, NoRing: !*rxRing,
		Warn: func(format string, a ...any) {
			fmt.Fprintf(os.Stderr, "delayline: warning: "+format+"\n", a...)
		},
	})
	if err != nil {
		return err
	}
	fwd.Start()
	if *readyFile != "" {
		if err := os.WriteFile(*readyFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			return fmt.Errorf("writing ready file: %w", err)
		}
	}
	for {
		select {
		case sig := <-signals:
			if err := fwd.WriteStats(*statsFile); err != nil {
				fmt.Fprintln(os.Stderr, "delayline: "+err.Error())
			}
			if sig != syscall.SIGUSR1 {
				return nil
			}
		case err := <-fwd.Fatal():
			if werr := fwd.WriteStats(*statsFile); werr != nil {
				fmt.Fprintln(os.Stderr, "delayline: "+werr.Error())
			}
			return err
		}
	}
}

func simulateCmd(args []string, in io.Reader, out io.Writer) error {
	fs := newFlagSet("simulate")
	specText := fs.String("spec", "none", "emulation to apply")
	seedText := fs.String("seed", "0", "random seed (loss, jitter), as given to run")
	direction := fs.String("direction", "a2b", "which direction of `run --seed` to replay")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *direction != "a2b" && *direction != "b2a" {
		return &delayline.ParamError{Parameter: "--direction", Value: *direction, Allowed: "a2b or b2a"}
	}
	spec, err := parseSpecFlag("--spec", *specText)
	if err != nil {
		return err
	}
	seed, err := parseSeed(*seedText)
	if err != nil {
		return err
	}
	sched := delayline.NewScheduler(spec, delayline.DirectionSeed(seed, *direction))
	scanner := bufio.NewScanner(in)
	w := bufio.NewWriter(out)
	defer w.Flush()
	lineNo := 0
	var last int64
	for scanner.Scan() {
		lineNo++
		fields := strings.Fields(scanner.Text())
		if len(fields) == 0 {
			continue
		}
		arrival, err1 := strconv.ParseInt(fields[0], 10, 64)
		var size int
		var err2 error
		if len(fields) == 2 {
			size, err2 = strconv.Atoi(fields[1])
		}
		if len(fields) != 2 || err1 != nil || err2 != nil || arrival < 0 || size < 1 || size > 1<<20 {
			return &usageError{fmt.Sprintf("invalid input line %d %q: allowed \"arrival_ns size_bytes\" "+
				"with arrival_ns >= 0 and size_bytes from 1 to 1048576", lineNo, scanner.Text())}
		}
		if arrival < last {
			return &usageError{fmt.Sprintf("invalid arrival_ns on line %d (%d): allowed non-decreasing arrivals (previous %d)",
				lineNo, arrival, last)}
		}
		last = arrival
		departure, verdict := sched.Schedule(arrival, size)
		if verdict == delayline.Deliver {
			fmt.Fprintf(w, "%d %d\n", arrival, departure)
		} else {
			fmt.Fprintf(w, "%d drop %s\n", arrival, verdict)
		}
	}
	if err := scanner.Err(); err != nil {
		return fmt.Errorf("reading stdin: %w", err)
	}
	return nil
}
