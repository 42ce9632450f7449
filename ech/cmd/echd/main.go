// Command echd is the testbed's real-TLS toolbox: the ECH front door in shared mode
// (serve) and split mode (front + origin), the ECH client and load generator (load), and
// the helpers that make its keys and certificates (keygen, configlist, ca).
//
// Errors are one line on stderr. Exit status 2 means bad usage or bad input (flags, key
// files, workload files, unknown sites); 1 means a run-time failure.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"cfrbench/ech/internal/echkeys"
	"cfrbench/ech/internal/frontlog"
	"cfrbench/ech/internal/loadgen"
	"cfrbench/ech/internal/server"
	"cfrbench/ech/internal/testca"
)

const usage = `usage: echd COMMAND [flags]   (echd COMMAND -h for the flags of one command)

commands:
  serve       shared-mode ECH front door: terminates TLS for the public name and all sites
  front       split-mode ECH front door: decrypts ECH, forwards ClientHelloInner to origins
  origin      origin backend for split mode: terminates TLS for the sites
  load        ECH client and load generator (learns ECH configs from DNS HTTPS records)
  keygen      generate ECH keys (X25519, HKDF-SHA256, AES-128-GCM + ChaCha20-Poly1305)
  configlist  print the advertised ECHConfigList of a key directory (base64)
  ca          create the per-run testbed CA (ca.pem, ca.key)
`

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	cmd, args := os.Args[1], os.Args[2:]
	// ECHD_CPUPROFILE=FILE writes a Go CPU profile of this run (performance work only).
	if prof := os.Getenv("ECHD_CPUPROFILE"); prof != "" {
		if f, err := os.Create(prof); err == nil {
			if pprof.StartCPUProfile(f) == nil {
				defer pprof.StopCPUProfile()
			}
		}
	}
	err := run(cmd, args)
	pprof.StopCPUProfile()
	if err == nil {
		return
	}
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	fmt.Fprintf(os.Stderr, "echd %s: %s\n", cmd, strings.ReplaceAll(err.Error(), "\n", " "))
	var ue usageError
	if errors.As(err, &ue) {
		os.Exit(2)
	}
	os.Exit(1)
}

func run(cmd string, args []string) error {
	var err error
	switch cmd {
	case "serve":
		err = cmdServe(args, "shared")
	case "front":
		err = cmdServe(args, "split")
	case "origin":
		err = cmdServe(args, "origin")
	case "load":
		err = cmdLoad(args)
	case "keygen":
		err = cmdKeygen(args)
	case "configlist":
		err = cmdConfigList(args)
	case "ca":
		err = cmdCA(args)
	case "-h", "--help", "help":
		fmt.Print(usage)
		return nil
	default:
		return usagef("unknown command %q (try 'echd help')", cmd)
	}
	return err
}

// parse parses flags; errors become one-line usage errors, -h prints the flags.
func parse(fs *flag.FlagSet, args []string) error {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(os.Stdout)
			fmt.Printf("usage: echd %s [flags]\n", fs.Name())
			fs.PrintDefaults()
			return flag.ErrHelp
		}
		return usagef("%v (see 'echd %s -h')", err, fs.Name())
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q (see 'echd %s -h')", fs.Arg(0), fs.Name())
	}
	return nil
}

func cmdServe(args []string, mode string) error {
	name := map[string]string{"shared": "serve", "split": "front", "origin": "origin"}[mode]
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	var listens, sitesNamed, routes listFlag
	fs.Var(&listens, "listen", "listen address host:port (repeatable; default [::]:443, dual stack)")
	keys := fs.String("keys", "", "ECH key directory or key file (serve, front)")
	caDir := fs.String("ca-dir", "", "testbed CA directory holding ca.pem and ca.key")
	public := fs.String("public-name", "cdn.example", "ECH public name (client-facing server name)")
	nsites := fs.Int("sites", 1000, "number of virtual sites site-0001.example ... (0..9999)")
	fs.Var(&sitesNamed, "site", "additional named site, e.g. pineapple-pizza.example (repeatable)")
	resumption := fs.Bool("resumption", true, "issue and accept session tickets (false sets SessionTicketsDisabled)")
	logPath := fs.String("log", "", "front-door log, JSON lines ('-' stdout, empty: none)")
	fs.Var(&routes, "route", "split mode: SUFFIX=HOST:PORT origin for inner server names ending in SUFFIX (repeatable)")
	defRoute := fs.String("default-route", "", "split mode: origin HOST:PORT for names no --route matches")
	curves := fs.String("curves", "", "restrict key exchange groups, e.g. P256 (testing HelloRetryRequest)")
	idle := fs.Duration("idle-timeout", 30*time.Second, "close idle HTTP connections after this long")
	certGroup := fs.Int("cert-group", 0, "numbered sites share certificates, this many names each (a CDN's shared certificates; lets clients coalesce connections); 0: one per name")
	hsTimeout := fs.Duration("handshake-timeout", 10*time.Second, "abort TLS handshakes taking longer")
	saveSYN := fs.Bool("save-syn", true, "log each client's SYN fingerprint (TCP_SAVE_SYN on the listener; Linux)")
	echDecrypt := fs.String("ech-decrypt", "self", "serve: who decrypts ECH: 'self' (echd, crypto/hpke; key parsed once) or 'tls' (crypto/tls EncryptedClientHelloKeys)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if len(listens) == 0 {
		listens = listFlag{"[::]:443"}
	}
	for _, l := range listens {
		if err := server.ParseListen(l); err != nil {
			return usageError{err.Error()}
		}
	}
	if !echkeys.ValidName(*public) {
		return usagef("invalid --public-name %q", *public)
	}
	if *caDir == "" {
		return usagef("--ca-dir is required")
	}
	sites, err := server.NewSites(*nsites, sitesNamed)
	if err != nil {
		return usageError{err.Error()}
	}
	ca, err := testca.Load(*caDir)
	if err != nil {
		return usageError{err.Error()}
	}
	var ks *server.KeyStore
	if mode != "origin" {
		if *keys == "" {
			return usagef("--keys is required")
		}
		if ks, err = server.NewKeyStore(*keys); err != nil {
			return usageError{err.Error()}
		}
	} else if *keys != "" {
		return usagef("origin takes no --keys: it receives ClientHelloInner already decrypted")
	}
	curveIDs, err := parseCurves(*curves)
	if err != nil {
		return err
	}
	var frs []server.Route
	for _, r := range routes {
		rt, err := server.ParseRoute(r)
		if err != nil {
			return usageError{err.Error()}
		}
		frs = append(frs, rt)
	}
	if mode == "split" {
		if len(frs) == 0 && *defRoute == "" {
			return usagef("front needs --route SUFFIX=HOST:PORT or --default-route HOST:PORT")
		}
		if *defRoute != "" {
			if _, _, err := net.SplitHostPort(*defRoute); err != nil {
				return usagef("invalid --default-route %q: %v", *defRoute, err)
			}
		}
	} else if len(frs) > 0 || *defRoute != "" {
		return usagef("--route/--default-route are for 'echd front' only")
	}
	log, err := frontlog.Open(*logPath)
	if err != nil {
		return usagef("--log: %v", err)
	}
	defer log.Close()
	ts := &server.TLSServer{
		Mode: mode, CA: ca, Sites: sites, PublicName: *public, Keys: ks, Resumption: *resumption,
		Log: log, HandshakeTimeout: *hsTimeout, IdleTimeout: *idle, CertGroup: *certGroup,
		SelfDecrypt: mode == "shared" && *echDecrypt == "self",
	}
	if *echDecrypt != "self" && *echDecrypt != "tls" {
		return usagef("--ech-decrypt must be self or tls")
	}
	ts.Curves = curveIDs
	if err := ts.Init(); err != nil {
		return err
	}
	var front *server.Front
	if mode == "split" {
		front = &server.Front{Keys: ks, PublicName: *public, Routes: frs, Default: *defRoute, Local: ts, Log: log}
		front.Init()
	}
	var lns []net.Listener
	for _, l := range listens {
		ln, err := frontlog.Listen(l, *saveSYN)
		if err != nil {
			return fmt.Errorf("listen %s: %v", l, err)
		}
		lns = append(lns, ln)
	}
	for _, ln := range lns {
		go func() {
			if front != nil {
				_ = front.Serve(ln)
			} else {
				_ = ts.Serve(ln)
			}
		}()
	}
	addrs := make([]string, len(lns))
	for i, ln := range lns {
		addrs[i] = ln.Addr().String()
	}
	nkeys := 0
	if ks != nil {
		nkeys = ks.Count()
	}
	fmt.Fprintf(os.Stderr, "echd %s: ready mode=%s listen=%s sites=%d ech_keys=%d resumption=%v\n",
		name, mode, strings.Join(addrs, ","), sites.Len(), nkeys, *resumption)
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	for sig := range sigs {
		if sig == syscall.SIGHUP {
			if ks == nil {
				continue
			}
			if err := ks.Reload(); err != nil {
				fmt.Fprintf(os.Stderr, "echd %s: key reload failed, keeping previous keys: %v\n", name, err)
			} else {
				fmt.Fprintf(os.Stderr, "echd %s: reloaded %d ECH keys\n", name, ks.Count())
			}
			continue
		}
		break
	}
	if front != nil {
		front.Shutdown()
	} else {
		ts.Shutdown()
	}
	return nil
}

func cmdKeygen(args []string) error {
	fs := flag.NewFlagSet("keygen", flag.ContinueOnError)
	dir := fs.String("dir", "", "key directory to add keys to (created if missing)")
	public := fs.String("public-name", "cdn.example", "ECH public name")
	count := fs.Int("count", 1, "number of keys to generate")
	maxName := fs.Int("max-name-length", echkeys.DefaultMaxNameLength, "ECHConfig maximum_name_length (padding target)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *dir == "" {
		return usagef("--dir is required")
	}
	if *count < 1 || *count > 64 {
		return usagef("--count must be 1..64")
	}
	if *maxName < 0 || *maxName > 255 {
		return usagef("--max-name-length must be 0..255")
	}
	if !echkeys.ValidName(*public) {
		return usagef("invalid --public-name %q", *public)
	}
	keys, err := echkeys.WriteNew(*dir, *public, *count, uint8(*maxName))
	if err != nil {
		return err
	}
	for _, k := range keys {
		fmt.Printf("%s config_id=%d\n", k.Path, k.ConfigID)
	}
	return nil
}

func cmdConfigList(args []string) error {
	fs := flag.NewFlagSet("configlist", flag.ContinueOnError)
	dir := fs.String("keys", "", "key directory or key file")
	asJSON := fs.Bool("json", false, "print JSON with the list and each key's config id")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *dir == "" {
		return usagef("--keys is required")
	}
	keys, err := echkeys.LoadDir(*dir)
	if err != nil {
		return usageError{err.Error()}
	}
	if !*asJSON {
		fmt.Println(echkeys.AdvertisedBase64(keys))
		return nil
	}
	type kj struct {
		Path      string `json:"path"`
		ConfigID  uint8  `json:"config_id"`
		Advertise bool   `json:"advertised"`
	}
	out := struct {
		ConfigList string `json:"ech_config_list"`
		PublicName string `json:"public_name"`
		Keys       []kj   `json:"keys"`
	}{ConfigList: echkeys.AdvertisedBase64(keys), PublicName: keys[0].PublicName}
	for _, k := range keys {
		out.Keys = append(out.Keys, kj{k.Path, k.ConfigID, k.Advertise})
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}

func cmdCA(args []string) error {
	fs := flag.NewFlagSet("ca", flag.ContinueOnError)
	dir := fs.String("dir", "", "directory for ca.pem and ca.key")
	cn := fs.String("name", "cfrbench testbed CA", "CA common name")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *dir == "" {
		return usagef("--dir is required")
	}
	return testca.Create(*dir, *cn)
}

func cmdLoad(args []string) error {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	dns := fs.String("dns", "", "DNS server HOST:PORT to learn HTTPS (ech=) and A/AAAA records from (required)")
	caFile := fs.String("ca", "", "CA certificate PEM to trust (the testbed CA's ca.pem) (required)")
	var sitesNamed, proxies listFlag
	fs.Var(&sitesNamed, "site", "site to visit (repeatable); default: --sites")
	nsites := fs.Int("sites", 0, "visit site-0001.example..site-N.example, chosen uniformly at random")
	path := fs.String("path", "/", "request path (e.g. /bytes/1000)")
	session := fs.Bool("session", false, "browsing mode: fetch /page/N and then its sub-resources")
	pageN := fs.Int("page-resources", 10, "N of /page/N in --session mode")
	sourcesFile := fs.String("sources", "", "file of 'subscriber_id addr' lines: bind each connection to a subscriber's address")
	source := fs.String("source", "", "single source address to bind (subscriber id 'default')")
	family := fs.Int("family", 0, "4 or 6: address family (default: that of the sources, else 4)")
	conc := fs.Int("concurrency", 1, "closed loop: concurrent workers")
	count := fs.Int("count", 1, "closed loop: total connections")
	rate := fs.Float64("rate", 0, "open loop: new flows per second (enables open loop)")
	duration := fs.Duration("duration", 10*time.Second, "open loop: how long to generate")
	arrivals := fs.String("arrivals", "uniform", "open loop inter-arrival times: uniform or poisson")
	maxIn := fs.Int("max-inflight", 4096, "open loop: flows in flight before new ones are dropped (and recorded)")
	resumption := fs.String("resumption", "off", "on: per-subscriber TLS session cache (tickets); off: every handshake full")
	workload := fs.String("workload", "", "JSON-lines workload file ({t, subscriber, source, site, path, subresources}; other keys are copied into each ground-truth line)")
	fs.Var(&proxies, "proxy", "HTTP CONNECT proxy HOST:PORT (repeat to chain; tunnels TLS, never terminates it)")
	out := fs.String("out", "", "ground-truth JSON lines file ('-' stdout)")
	summaryJSON := fs.Bool("summary-json", false, "print the summary as JSON")
	noECH := fs.Bool("no-ech", false, "connect without ECH (baseline for comparisons; SNI in clear)")
	alpn := fs.String("alpn", "h2,http/1.1", "ALPN protocols to offer")
	port := fs.Int("port", 0, "server port (default: HTTPS record port= or 443)")
	timeout := fs.Duration("timeout", 10*time.Second, "per-connection timeout")
	dnsCache := fs.Bool("dns-cache", true, "cache DNS answers for their TTL (false: query for every flow)")
	runID := fs.String("run-id", "", "prefix of flow ids (default random)")
	seed := fs.Uint64("seed", 0, "random seed for site choice and arrivals (default time)")
	failOnError := fs.Bool("fail-on-error", false, "exit 1 if any connection failed")
	curves := fs.String("curves", "", "key exchange groups to offer, e.g. X25519 (default: Go's, X25519MLKEM768 first)")
	keepAlive := fs.Duration("keep-alive", 0, "keep a device's HTTP connection to a site open this long after use and send its next visit there over it (0: a new connection per visit)")
	coalesce := fs.Bool("coalesce", false, "with --keep-alive: send a visit to another site over an open HTTP/2 connection when the site resolves to its address and its certificate covers the site, as browsers coalesce (RFC 9113 sec. 9.1.1)")
	profilesFile := fs.String("profiles", "", "JSON {name: device profile} (ttl, hop_limit, mss, rcvbuf, netns, min_tls, cipher_suites, curves, alpn, no_tickets); workload lines pick one with \"profile\"")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *dns == "" {
		return usagef("--dns HOST:PORT is required (clients learn ECH configs from DNS)")
	}
	if _, _, err := net.SplitHostPort(*dns); err != nil {
		return usagef("invalid --dns %q: %v", *dns, err)
	}
	if *caFile == "" {
		return usagef("--ca is required")
	}
	pool, err := testca.LoadPool(*caFile)
	if err != nil {
		return usagef("--ca: %v", err)
	}
	curveIDs, err := parseCurves(*curves)
	if err != nil {
		return err
	}
	o := loadgen.Options{
		Curves: curveIDs,
		DNS:    *dns, RootCAs: pool, Path: *path, Session: *session, PageN: *pageN, Family: *family,
		Concurrency: *conc, Count: *count, Rate: *rate, Duration: *duration, Poisson: *arrivals == "poisson",
		MaxInflight: *maxIn, Proxies: proxies, NoECH: *noECH, Port: *port, Timeout: *timeout,
		DNSCache: *dnsCache, RunID: *runID, Seed: *seed, KeepAlive: *keepAlive, Coalesce: *coalesce,
	}
	if *arrivals != "uniform" && *arrivals != "poisson" {
		return usagef("--arrivals must be uniform or poisson")
	}
	switch *resumption {
	case "on":
		o.Resumption = true
	case "off":
	default:
		return usagef("--resumption must be on or off")
	}
	if *family != 0 && *family != 4 && *family != 6 {
		return usagef("--family must be 4 or 6")
	}
	if !strings.HasPrefix(*path, "/") {
		return usagef("--path must start with '/'")
	}
	if *pageN < 0 || *pageN > server.MaxPageRes {
		return usagef("--page-resources must be 0..%d", server.MaxPageRes)
	}
	if *conc < 1 || *count < 0 || *rate < 0 || *duration <= 0 {
		return usagef("--concurrency >= 1, --count >= 0, --rate >= 0 and --duration > 0 are required")
	}
	if *port < 0 || *port > 65535 {
		return usagef("--port must be 0..65535")
	}
	for _, p := range proxies {
		if _, _, err := net.SplitHostPort(p); err != nil {
			return usagef("invalid --proxy %q: %v", p, err)
		}
	}
	for _, a := range strings.Split(*alpn, ",") {
		if a = strings.TrimSpace(a); a != "" {
			o.ALPN = append(o.ALPN, a)
		}
	}
	for _, s := range sitesNamed {
		if !echkeys.ValidName(s) {
			return usagef("invalid --site %q", s)
		}
		o.Sites = append(o.Sites, strings.ToLower(s))
	}
	if *nsites < 0 || *nsites > 9999 {
		return usagef("--sites must be 0..9999")
	}
	for i := 1; i <= *nsites; i++ {
		o.Sites = append(o.Sites, server.SiteName(i))
	}
	if *sourcesFile != "" && *source != "" {
		return usagef("give --sources or --source, not both")
	}
	if *sourcesFile != "" {
		f, err := os.Open(*sourcesFile)
		if err != nil {
			return usagef("--sources: %v", err)
		}
		o.Sources, err = loadgen.ParseSources(f, *sourcesFile)
		f.Close()
		if err != nil {
			return usageError{err.Error()}
		}
	} else if *source != "" {
		a, err := netip.ParseAddr(*source)
		if err != nil {
			return usagef("invalid --source %q", *source)
		}
		o.Sources = []loadgen.Source{{Subscriber: "default", Addr: a}}
	}
	if *family != 0 && len(o.Sources) > 0 {
		var keep []loadgen.Source
		for _, s := range o.Sources {
			if (*family == 6) == (s.Addr.Is6() && !s.Addr.Is4In6()) {
				keep = append(keep, s)
			}
		}
		if len(keep) == 0 {
			return usagef("no source address of family %d", *family)
		}
		o.Sources = keep
	}
	if *keepAlive < 0 {
		return usagef("--keep-alive must be >= 0")
	}
	if *coalesce && *keepAlive == 0 {
		return usagef("--coalesce needs --keep-alive > 0 (only an open connection can be coalesced onto)")
	}
	if *profilesFile != "" {
		f, err := os.Open(*profilesFile)
		if err != nil {
			return usagef("--profiles: %v", err)
		}
		o.Profiles, err = loadgen.ParseProfiles(f, *profilesFile)
		f.Close()
		if err != nil {
			return usageError{err.Error()}
		}
	}
	if *workload != "" {
		if len(o.Sites) > 0 || *rate > 0 {
			return usagef("--workload replaces --site/--sites/--rate")
		}
		f, err := os.Open(*workload)
		if err != nil {
			return usagef("--workload: %v", err)
		}
		o.Workload, err = loadgen.ParseWorkload(f, *workload)
		f.Close()
		if err != nil {
			return usageError{err.Error()}
		}
	} else if len(o.Sites) == 0 {
		return usagef("give --site NAME, --sites N or --workload FILE")
	}
	var outW io.Writer
	switch *out {
	case "":
	case "-":
		outW = os.Stdout
	default:
		f, err := os.Create(*out)
		if err != nil {
			return usagef("--out: %v", err)
		}
		defer f.Close()
		outW = f
	}
	o.Out = outW
	g, err := loadgen.New(o)
	if err != nil {
		return usageError{err.Error()}
	}
	if err := g.Preflight(sitesNamed); err != nil {
		if loadgen.IsNXDomain(err) {
			return usageError{err.Error()}
		}
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	sum := g.Run(ctx)
	sumOut := os.Stdout
	if *out == "-" {
		sumOut = os.Stderr
	}
	if *summaryJSON {
		_ = json.NewEncoder(sumOut).Encode(sum)
	} else {
		fmt.Fprint(sumOut, loadgen.SummaryText(sum))
	}
	if sum.Count > 0 && sum.Errors == sum.Count {
		return fmt.Errorf("all %d connections failed", sum.Count)
	}
	if *failOnError && sum.Errors > 0 {
		return fmt.Errorf("%d of %d connections failed", sum.Errors, sum.Count)
	}
	return nil
}

// parseCurves maps names to TLS key exchange groups ("" means crypto/tls's default).
func parseCurves(list string) ([]tls.CurveID, error) {
	if list == "" {
		return nil, nil
	}
	names := map[string]tls.CurveID{"P256": tls.CurveP256, "P384": tls.CurveP384, "P521": tls.CurveP521,
		"X25519": tls.X25519, "X25519MLKEM768": tls.X25519MLKEM768}
	var out []tls.CurveID
	for _, c := range strings.Split(list, ",") {
		id, ok := names[strings.TrimSpace(c)]
		if !ok {
			return nil, usagef("unknown curve %q (P256, P384, P521, X25519, X25519MLKEM768)", c)
		}
		out = append(out, id)
	}
	return out, nil
}
