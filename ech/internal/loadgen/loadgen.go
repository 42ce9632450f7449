// Package loadgen is the ECH client and load generator. It learns each site's
// ECHConfigList from DNS (HTTPS records), binds every connection to a subscriber's source
// address, connects with ECH, times each phase, and writes one ground-truth line per TLS
// connection; the client_random in it is the join key to the front door's log.
package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"cfrbench/ech/internal/dnshttps"
	"cfrbench/ech/internal/frontlog"
	"cfrbench/ech/internal/server"
)

// Source is one subscriber and the address its connections come from.
type Source struct {
	Subscriber string
	Addr       netip.Addr // invalid: let the kernel choose
}

// WorkItem is one line of a workload file.
type WorkItem struct {
	T            float64 `json:"t"`
	Subscriber   string  `json:"subscriber"`
	Source       string  `json:"source"`
	Site         string  `json:"site"`
	Path         string  `json:"path"`
	Subresources bool    `json:"subresources"`
	addr         netip.Addr
	// Device and Profile are read from the workload keys "device" and "profile" (which are
	// also copied through in Extra): a device keeps one TLS session cache whatever source
	// address it uses, and its profile (Options.Profiles) sets its stack and ClientHello.
	Device  string `json:"-"`
	Profile string `json:"-"`
	// Extra holds every other key of the workload line (household, device, session_id,
	// family, ...), encoded once as the members of a JSON object without braces
	// (`"device":"d1","household":"h1"`, keys sorted; keys that are ground-truth fields
	// dropped). It is spliced unchanged into each ground-truth line of the record's flows.
	Extra []byte `json:"-"`
}

// Options configures a run.
type Options struct {
	DNS         string
	RootCAs     *x509.CertPool
	Sites       []string
	Path        string
	Session     bool
	PageN       int
	Sources     []Source
	Family      int
	Concurrency int
	Count       int
	Rate        float64
	Duration    time.Duration
	Poisson     bool
	MaxInflight int
	Resumption  bool
	Workload    []WorkItem
	Proxies     []string
	Out         io.Writer
	NoECH       bool
	ALPN        []string
	Port        int
	Timeout     time.Duration
	DNSCache    bool
	Curves      []tls.CurveID
	RunID       string
	Seed        uint64
	// Profiles are the device types a workload line can name ("profile": NAME).
	Profiles map[string]*Profile
	// KeepAlive > 0: a client identity keeps its HTTP/2 connection to a site open this long
	// after its last use and sends the next visit to that site over it (a browser's
	// connection reuse): no new TCP or TLS handshake, no new front-door log line.
	KeepAlive time.Duration
	// Coalesce (with KeepAlive): a visit to a site with no open connection of its own goes
	// over an idle HTTP/2 connection of the same client identity to another site when the
	// site resolves to that connection's address and port and the connection's certificate
	// covers the site (RFC 9113 sec. 9.1.1 connection reuse, as browsers coalesce). Off: one
	// connection per (identity, site), as before.
	Coalesce bool
}

// Truth is one ground-truth line: one TCP+TLS connection as the client made it.
type Truth struct {
	TS           float64  `json:"ts"`
	Subscriber   string   `json:"subscriber"`
	FlowID       string   `json:"flow_id"`
	Site         string   `json:"site"`
	LocalAddr    string   `json:"local_addr"`
	LocalPort    int      `json:"local_port"`
	RemoteAddr   string   `json:"remote_addr"`
	RemotePort   int      `json:"remote_port"`
	ECHAccepted  bool     `json:"ech_accepted"`
	Resumed      bool     `json:"resumed"`
	ClientRandom *string  `json:"client_random"`
	DNSMS        *float64 `json:"dns_ms"`
	ConnectMS    *float64 `json:"connect_ms"`
	TLSMS        *float64 `json:"tls_ms"`
	TTFBMS       *float64 `json:"ttfb_ms"`
	TotalMS      *float64 `json:"total_ms"`
	Status       int      `json:"status"`
	Bytes        int64    `json:"bytes"`
	Error        *string  `json:"error"`
	DNSCached    bool     `json:"dns_cached"`
	ALPN         string   `json:"alpn"`
	Requests     int      `json:"requests"`
	Path         string   `json:"path"`
	Proxy        *string  `json:"proxy"`
	Attempt      int      `json:"attempt"`
	LateMS       float64  `json:"late_ms"`
	// Reused: this visit went over an open connection of the same client identity
	// (--keep-alive); connection fields and client_random are that connection's.
	Reused bool `json:"reused"`
	// Coalesced: this visit went over an open connection first made for another site
	// (Options.Coalesce); ConnSite is the site that connection was made for (its inner
	// SNI), empty otherwise.
	Coalesced bool   `json:"coalesced"`
	ConnSite  string `json:"conn_site"`
	// extra: the workload record's own fields (WorkItem.Extra), appended to the line.
	extra []byte
}

// MarshalLine is the ground-truth line without its newline: the generator's fields, then
// the workload record's extra fields.
func (t *Truth) MarshalLine() ([]byte, error) {
	b, err := json.Marshal(t)
	if err != nil || len(t.extra) == 0 {
		return b, err
	}
	// b ends in '}' and has at least one member (Truth has no omitempty fields).
	out := make([]byte, 0, len(b)+1+len(t.extra))
	out = append(out, b[:len(b)-1]...)
	out = append(out, ',')
	out = append(out, t.extra...)
	return append(out, '}'), nil
}

// truthFields are the ground-truth line's own keys: a workload field with one of these
// names is dropped (the generator's value wins).
var truthFields = func() map[string]bool {
	m := map[string]bool{}
	rt := reflect.TypeFor[Truth]()
	for i := 0; i < rt.NumField(); i++ {
		name, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
		if name != "" && name != "-" {
			m[name] = true
		}
	}
	return m
}()

// workItemFields are the workload keys echd load interprets itself (not copied through).
var workItemFields = []string{"t", "subscriber", "source", "site", "path", "subresources"}

// Summary is printed at the end of a run.
type Summary struct {
	Count       int                `json:"count"`
	Errors      int                `json:"errors"`
	ECHAccepted int                `json:"ech_accepted"`
	Resumed     int                `json:"resumed"`
	Retries     int                `json:"ech_retries"`
	DurationS   float64            `json:"duration_s"`
	Rate        float64            `json:"rate"`
	Median      map[string]float64 `json:"median_ms"`
	P95         map[string]float64 `json:"p95_ms"`
	ErrorKinds  map[string]int     `json:"error_kinds"`
	MaxLateMS   float64            `json:"max_late_ms"`
}

// subscriber is one client identity with its own TLS session cache: a device of a
// subscriber when the workload names devices (its cache then serves every address the
// device uses, as a browser's does), else a (subscriber, source address) pair.
type subscriber struct {
	id      string
	addr    netip.Addr
	cfg     *tls.Config
	profile *Profile
	tr      *http.Transport // the profile's HTTP/2 settings; nil: the generator's
}

// Gen runs one load-generation session.
type Gen struct {
	o      Options
	res    *resolver
	base   *tls.Config
	subsMu sync.Mutex
	subs   map[string]*subscriber
	subIdx []*subscriber
	flowN  atomic.Uint64
	out    chan *Truth
	recs   []*Truth
	wdone  chan struct{}
	rng    *mrand.Rand
	rngMu  sync.Mutex
	tr     *http.Transport
	// verified caches successful chain verifications (see verifyOnce).
	verified sync.Map
	// live holds idle kept-alive connections by (client identity, site) (--keep-alive); a
	// connection that served several sites (Coalesce) is held under each of them. bySub
	// indexes the same connections by identity, for the coalescing search.
	liveMu sync.Mutex
	live   map[liveKey]*liveConn
	bySub  map[*subscriber]map[*liveConn]struct{}
}

type liveKey struct {
	sub  *subscriber
	site string
}

// liveConn is an idle HTTP/2 connection kept for reuse, with the ground-truth fields that
// describe the connection (copied into each visit that reuses it).
type liveConn struct {
	raw   net.Conn
	cc    *http.ClientConn
	conn  Truth
	timer *time.Timer
	// remote is the address and port the connection went to, leaf the server's certificate:
	// what decides whether another site may be coalesced onto it. keys: where it is parked.
	remote netip.AddrPort
	leaf   *x509.Certificate
	keys   []liveKey
}

// covers reports whether a visit to site may go over this connection (RFC 9113 sec. 9.1.1):
// HTTP/2, one of the site's addresses (and its port), and a certificate valid for the site.
func (lc *liveConn) covers(site string, addrs []netip.Addr, port int) bool {
	if lc.conn.ALPN != "h2" || lc.leaf == nil || int(lc.remote.Port()) != port {
		return false
	}
	if !slices.Contains(addrs, lc.remote.Addr()) && !slices.Contains(addrs, lc.remote.Addr().Unmap()) {
		return false
	}
	return lc.leaf.VerifyHostname(site) == nil
}

func (lc *liveConn) close() {
	_ = lc.cc.Close()
	_ = lc.raw.Close()
}

// park keeps a connection for reuse under k and every site it served before; it is closed
// after KeepAlive without use.
func (g *Gen) park(k liveKey, lc *liveConn) {
	g.liveMu.Lock()
	defer g.liveMu.Unlock()
	if !slices.Contains(lc.keys, k) {
		lc.keys = append(lc.keys, k)
	}
	for _, kk := range lc.keys {
		if old := g.live[kk]; old != nil && old != lc {
			// one idle connection per (identity, site): a second one is closed, as a browser
			// closes surplus idle connections
			if old.timer.Stop() {
				g.unlinkLocked(old)
				go old.close()
			}
		}
		g.live[kk] = lc
	}
	if g.bySub[k.sub] == nil {
		g.bySub[k.sub] = map[*liveConn]struct{}{}
	}
	g.bySub[k.sub][lc] = struct{}{}
	lc.timer = time.AfterFunc(g.o.KeepAlive, func() {
		g.liveMu.Lock()
		g.unlinkLocked(lc)
		g.liveMu.Unlock()
		lc.close()
	})
}

// unlinkLocked removes lc from every key it is parked under (liveMu held).
func (g *Gen) unlinkLocked(lc *liveConn) {
	for _, kk := range lc.keys {
		if g.live[kk] == lc {
			delete(g.live, kk)
		}
		if m := g.bySub[kk.sub]; m != nil {
			delete(m, lc)
			if len(m) == 0 {
				delete(g.bySub, kk.sub)
			}
		}
	}
}

// claimLocked takes lc out of the idle set for exclusive use; nil if it can no longer be
// used (its timer fired, or the server closed or filled it).
func (g *Gen) claimLocked(lc *liveConn) *liveConn {
	g.unlinkLocked(lc)
	if !lc.timer.Stop() {
		return nil // the timer's func closes it
	}
	if lc.cc.Err() != nil || lc.cc.Available() < 1 {
		go lc.close()
		return nil
	}
	return lc
}

// take removes and returns the idle connection for k, if one is still usable.
func (g *Gen) take(k liveKey) *liveConn {
	g.liveMu.Lock()
	defer g.liveMu.Unlock()
	lc := g.live[k]
	if lc == nil {
		return nil
	}
	return g.claimLocked(lc)
}

// takeCoalescable removes and returns an idle connection of sub that may carry a visit to
// site (liveConn.covers), the most recently made one first; nil if there is none.
func (g *Gen) takeCoalescable(sub *subscriber, site string, addrs []netip.Addr, port int) *liveConn {
	g.liveMu.Lock()
	defer g.liveMu.Unlock()
	var best *liveConn
	for lc := range g.bySub[sub] {
		if lc.covers(site, addrs, port) && (best == nil || lc.conn.TS > best.conn.TS) {
			best = lc
		}
	}
	if best == nil {
		return nil
	}
	return g.claimLocked(best)
}

// closeLive closes every idle connection (end of run: the front door logs each on close).
func (g *Gen) closeLive() {
	g.liveMu.Lock()
	defer g.liveMu.Unlock()
	for _, lc := range g.live {
		if lc.timer.Stop() {
			lc.close()
		}
	}
	clear(g.live)
	clear(g.bySub)
}

type dialKey struct{}

// verifyOnce verifies the server's chain for the connection's server name, caching the
// result per (leaf certificate, name).
func (g *Gen) verifyOnce(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("server sent no certificate")
	}
	leaf := cs.PeerCertificates[0]
	k := cs.ServerName + "\x00" + string(leaf.Raw)
	if _, ok := g.verified.Load(k); ok {
		return nil
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: g.o.RootCAs, Intermediates: inter, DNSName: cs.ServerName}); err != nil {
		return err
	}
	g.verified.Store(k, struct{}{})
	return nil
}

// New validates options and prepares the generator.
func New(o Options) (*Gen, error) {
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Path == "" {
		o.Path = "/"
	}
	if o.RunID == "" {
		var b [3]byte
		_, _ = rand.Read(b[:])
		o.RunID = hex.EncodeToString(b[:])
	}
	if o.Seed == 0 {
		o.Seed = uint64(time.Now().UnixNano())
	}
	g := &Gen{o: o, res: newResolver(o.DNS, o.DNSCache), subs: map[string]*subscriber{}, live: map[liveKey]*liveConn{}, bySub: map[*subscriber]map[*liveConn]struct{}{},
		out: make(chan *Truth, 4096), wdone: make(chan struct{}), rng: mrand.New(mrand.NewPCG(o.Seed, 0x5eed))}
	alpn := o.ALPN
	if len(alpn) == 0 {
		alpn = []string{"h2", "http/1.1"}
	}
	g.base = &tls.Config{RootCAs: o.RootCAs, MinVersion: tls.VersionTLS13, NextProtos: alpn,
		// Chain verification is done by verifyOnce, which verifies each distinct server
		// certificate against RootCAs once and caches the verdict: a browser-like client
		// sees the same few certificates again and again, and building and checking the
		// chain (an ECDSA verification plus allocations) on every one of thousands of
		// connections per second would make the generator, not the server, the bottleneck.
		// The handshake signature (CertificateVerify) is still checked on every connection
		// by crypto/tls, and a rejected ECH still verifies the public name against RootCAs.
		InsecureSkipVerify: true,
		VerifyConnection:   g.verifyOnce,
		CurvePreferences:   o.Curves,
	}
	g.tr = &http.Transport{
		DialTLSContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			c, _ := ctx.Value(dialKey{}).(net.Conn)
			if c == nil {
				return nil, errors.New("no pre-established connection")
			}
			return c, nil
		},
		ForceAttemptHTTP2:  true,
		DisableCompression: true,
	}
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetHTTP2(true)
	g.tr.Protocols = p
	for _, it := range o.Workload {
		if it.Profile != "" && o.Profiles[it.Profile] == nil {
			return nil, fmt.Errorf("workload names profile %q, which --profiles does not define", it.Profile)
		}
	}
	for _, s := range o.Sources {
		g.subscriber(s.Subscriber, s.Addr, "", "")
	}
	return g, nil
}

// subscriber returns the client identity for (id, device) or, without a device, for
// (id, addr); profile applies when the identity is first seen.
func (g *Gen) subscriber(id string, addr netip.Addr, device, profile string) *subscriber {
	k := id + "|" + addr.String()
	if device != "" {
		k = id + "|device|" + device
	}
	g.subsMu.Lock()
	defer g.subsMu.Unlock()
	if s := g.subs[k]; s != nil {
		return s
	}
	s := &subscriber{id: id, addr: addr, cfg: g.base.Clone(), profile: g.o.Profiles[profile]}
	s.profile.apply(s.cfg)
	if h2 := s.profile.h2Config(); h2 != nil {
		s.tr = g.tr.Clone()
		s.tr.HTTP2 = h2
	}
	if g.o.Resumption && (s.profile == nil || !s.profile.NoTickets) {
		s.cfg.ClientSessionCache = tls.NewLRUClientSessionCache(256)
	}
	g.subs[k] = s
	g.subIdx = append(g.subIdx, s)
	return s
}

func (g *Gen) family(addr netip.Addr) int {
	if g.o.Family != 0 {
		return g.o.Family
	}
	if addr.IsValid() && addr.Is6() && !addr.Is4In6() {
		return 6
	}
	return 4
}

// Preflight resolves explicitly named sites once so that a typo fails fast (exit 2).
func (g *Gen) Preflight(sites []string) error {
	fam := g.o.Family
	if fam == 0 {
		fam = 4
		if len(g.subIdx) > 0 {
			fam = g.family(g.subIdx[0].addr)
		}
	}
	for _, s := range sites {
		if _, _, _, err := g.res.lookup(s, fam); err != nil {
			return err
		}
	}
	return nil
}

func (g *Gen) writer() {
	var bw *bufio.Writer
	if g.o.Out != nil {
		bw = bufio.NewWriterSize(g.o.Out, 64<<10)
	}
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case t, ok := <-g.out:
			if !ok {
				if bw != nil {
					_ = bw.Flush()
				}
				close(g.wdone)
				return
			}
			g.recs = append(g.recs, t)
			if bw != nil {
				b, _ := t.MarshalLine()
				_, _ = bw.Write(append(b, '\n'))
			}
		case <-tick.C:
			if bw != nil {
				_ = bw.Flush()
			}
		}
	}
}

type flowSpec struct {
	sub     *subscriber
	addr    netip.Addr // source address to bind (invalid: the kernel's choice)
	site    string
	path    string
	session bool
	sched   time.Time
	extra   []byte // WorkItem.Extra
}

func (g *Gen) pickSite() string {
	if len(g.o.Sites) == 1 {
		return g.o.Sites[0]
	}
	g.rngMu.Lock()
	i := g.rng.IntN(len(g.o.Sites))
	g.rngMu.Unlock()
	return g.o.Sites[i]
}

func (g *Gen) nthSpec(n uint64) flowSpec {
	var sub *subscriber
	if len(g.subIdx) == 0 {
		sub = g.subscriber("default", netip.Addr{}, "", "")
	} else {
		sub = g.subIdx[int(n%uint64(len(g.subIdx)))]
	}
	path := g.o.Path
	if g.o.Session {
		path = "/page/" + strconv.Itoa(g.o.PageN)
	}
	return flowSpec{sub: sub, addr: sub.addr, site: g.pickSite(), path: path, session: g.o.Session}
}

// Run executes the configured mode and returns the summary.
func (g *Gen) Run(ctx context.Context) Summary {
	go g.writer()
	start := time.Now()
	switch {
	case len(g.o.Workload) > 0:
		g.runWorkload(ctx, start)
	case g.o.Rate > 0:
		g.runOpen(ctx, start)
	default:
		g.runClosed(ctx)
	}
	elapsed := time.Since(start)
	g.closeLive()
	close(g.out)
	<-g.wdone
	return summarize(g.recs, elapsed)
}

func (g *Gen) runClosed(ctx context.Context) {
	var next atomic.Int64
	var wg sync.WaitGroup
	conc := max(g.o.Concurrency, 1)
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				n := next.Add(1) - 1
				if n >= int64(g.o.Count) {
					return
				}
				spec := g.nthSpec(uint64(n))
				spec.sched = time.Now()
				g.flow(ctx, spec)
			}
		}()
	}
	wg.Wait()
}

func (g *Gen) runOpen(ctx context.Context, start time.Time) {
	var wg sync.WaitGroup
	maxIn := g.o.MaxInflight
	if maxIn <= 0 {
		maxIn = 4096
	}
	sem := make(chan struct{}, maxIn)
	offset := 0.0
	for n := uint64(0); ctx.Err() == nil; n++ {
		if g.o.Poisson {
			g.rngMu.Lock()
			offset += g.rng.ExpFloat64() / g.o.Rate
			g.rngMu.Unlock()
		} else {
			offset = float64(n) / g.o.Rate
		}
		if offset >= g.o.Duration.Seconds() {
			break
		}
		at := start.Add(time.Duration(offset * float64(time.Second)))
		if d := time.Until(at); d > 0 {
			sleepCtx(ctx, d)
		}
		spec := g.nthSpec(n)
		spec.sched = at
		select {
		case sem <- struct{}{}:
		default:
			g.emit(&Truth{TS: unix(at), Subscriber: spec.sub.id, FlowID: g.newFlowID(), Site: spec.site,
				Path: spec.path, Error: frontlog.Str("not started: --max-inflight reached (generator saturated)"), Attempt: 1})
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			g.flow(ctx, spec)
		}()
	}
	wg.Wait()
}

func (g *Gen) runWorkload(ctx context.Context, start time.Time) {
	items := append([]WorkItem(nil), g.o.Workload...)
	sort.SliceStable(items, func(i, j int) bool { return items[i].T < items[j].T })
	var wg sync.WaitGroup
	for _, it := range items {
		if ctx.Err() != nil {
			break
		}
		at := start.Add(time.Duration(it.T * float64(time.Second)))
		if d := time.Until(at); d > 0 {
			sleepCtx(ctx, d)
		}
		path := it.Path
		if path == "" {
			path = "/"
		}
		spec := flowSpec{sub: g.subscriber(it.Subscriber, it.addr, it.Device, it.Profile), addr: it.addr, site: it.Site, path: path, session: it.Subresources, sched: at, extra: it.Extra}
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.flow(ctx, spec)
		}()
	}
	wg.Wait()
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

func (g *Gen) newFlowID() string {
	return g.o.RunID + "-" + strconv.FormatUint(g.flowN.Add(1), 10)
}

func (g *Gen) emit(t *Truth) { g.out <- t }

func unix(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

func msp(d time.Duration) *float64 {
	v := float64(d.Microseconds()) / 1000
	return &v
}

// keyLogRandom captures the client random from the first NSS key-log line of one
// connection: the random of the ClientHello whose handshake actually ran (the inner one
// when ECH is accepted), which is also what the front door logs.
type keyLogRandom struct{ random string }

func (k *keyLogRandom) Write(p []byte) (int, error) {
	if k.random == "" {
		f := strings.Fields(string(p))
		if len(f) >= 3 && len(f[1]) == 64 {
			k.random = f[1]
		}
	}
	return len(p), nil
}

// flow runs one flow: DNS, then one connection, plus one more if ECH was rejected with
// retry configs (the RFC 9849 §6.1.6 recovery).
func (g *Gen) flow(ctx context.Context, spec flowSpec) {
	flowID := g.newFlowID()
	late := time.Since(spec.sched)
	if g.o.KeepAlive > 0 {
		if lc := g.take(liveKey{spec.sub, spec.site}); lc != nil {
			g.reuse(ctx, spec, lc, flowID, late)
			return
		}
	}
	fam := g.family(spec.addr)
	t0 := time.Now()
	info, dnsMS, cached, err := g.res.lookup(spec.site, fam)
	if err == nil && g.o.KeepAlive > 0 && g.o.Coalesce {
		if lc := g.takeCoalescable(spec.sub, spec.site, info.addrs, g.sitePort(info)); lc != nil {
			g.reuse(ctx, spec, lc, flowID, late)
			return
		}
	}
	base := Truth{TS: unix(t0), Subscriber: spec.sub.id, FlowID: flowID, Site: spec.site, Path: spec.path,
		DNSCached: cached, Attempt: 1, LateMS: float64(late.Microseconds()) / 1000, extra: spec.extra}
	base.DNSMS = &dnsMS
	if err != nil {
		t := base
		t.Error = frontlog.Str(oneLine(err.Error()))
		t.TotalMS = msp(time.Since(t0))
		g.emit(&t)
		return
	}
	ech := info.ech
	for attempt := 1; attempt <= 2; attempt++ {
		t := base
		t.Attempt = attempt
		if attempt > 1 {
			t.FlowID = flowID + ".retry"
			t.TS = unix(time.Now())
			zero := 0.0
			t.DNSMS = &zero
		}
		retry := g.connect(ctx, spec, info, ech, fam, &t, t0)
		g.emit(&t)
		if retry == nil {
			return
		}
		g.res.updateECH(spec.site, fam, retry)
		ech = retry
		t0 = time.Now()
	}
}

// reuse runs one visit over a kept-alive connection and parks it again if it is healthy.
func (g *Gen) reuse(ctx context.Context, spec flowSpec, lc *liveConn, flowID string, late time.Duration) {
	t0 := time.Now()
	t := lc.conn
	t.TS, t.FlowID, t.Path, t.Attempt, t.Reused = unix(t0), flowID, spec.path, 1, true
	if spec.site != lc.conn.Site {
		t.Coalesced, t.ConnSite = true, lc.conn.Site
	}
	t.LateMS, t.extra, t.Subscriber, t.Site = float64(late.Microseconds())/1000, spec.extra, spec.sub.id, spec.site
	ctx, cancel := context.WithTimeout(ctx, g.o.Timeout)
	defer cancel()
	err := g.exchange(ctx, lc.cc, spec, &t)
	t.TotalMS = msp(time.Since(t0))
	if err != nil {
		t.Error = frontlog.Str(oneLine(err.Error()))
		lc.close()
	} else {
		g.park(liveKey{spec.sub, spec.site}, lc)
	}
	g.emit(&t)
}

// connect makes one connection; it returns retry configs when the front door rejected ECH
// and offered them.
func (g *Gen) connect(ctx context.Context, spec flowSpec, info *siteInfo, ech []byte, fam int, t *Truth, t0 time.Time) []byte {
	fail := func(err error) {
		t.Error = frontlog.Str(oneLine(err.Error()))
		t.TotalMS = msp(time.Since(t0))
	}
	ctx, cancel := context.WithTimeout(ctx, g.o.Timeout)
	defer cancel()
	port := g.sitePort(info)
	remote := info.addrs[int(g.flowN.Load())%len(info.addrs)]
	target := netip.AddrPortFrom(remote, uint16(port))
	t.RemoteAddr, t.RemotePort = remote.Unmap().String(), port
	tc0 := time.Now()
	raw, err := g.dial(ctx, spec, target)
	if err != nil {
		fail(err)
		return nil
	}
	parked := false
	defer func() {
		if !parked {
			raw.Close()
		}
	}()
	t.ConnectMS = msp(time.Since(tc0))
	la, lp := frontlog.SplitAddr(raw.LocalAddr())
	t.LocalAddr, t.LocalPort = la, lp
	if len(g.o.Proxies) > 0 {
		t.Proxy = frontlog.Str(g.o.Proxies[0])
	}
	cfg := spec.sub.cfg.Clone()
	cfg.ServerName = spec.site
	kl := &keyLogRandom{}
	cfg.KeyLogWriter = kl
	if !g.o.NoECH {
		cfg.EncryptedClientHelloConfigList = ech
	}
	tls0 := time.Now()
	conn := tls.Client(raw, cfg)
	err = conn.HandshakeContext(ctx)
	if kl.random != "" {
		t.ClientRandom = frontlog.Str(kl.random)
	}
	if err != nil {
		var rej *tls.ECHRejectionError
		if errors.As(err, &rej) && len(rej.RetryConfigList) > 0 {
			fail(fmt.Errorf("ECH rejected; retry configs received (%d bytes)", len(rej.RetryConfigList)))
			return rej.RetryConfigList
		}
		fail(err)
		return nil
	}
	t.TLSMS = msp(time.Since(tls0))
	cs := conn.ConnectionState()
	t.ECHAccepted, t.Resumed, t.ALPN = cs.ECHAccepted, cs.DidResume, cs.NegotiatedProtocol
	cc, err := g.httpExchange(ctx, conn, spec, t)
	if err != nil {
		fail(err)
		return nil
	}
	if cc != nil {
		if g.o.KeepAlive > 0 && cc.Err() == nil {
			idt := *t
			idt.Error, idt.TTFBMS, idt.TotalMS, idt.Requests, idt.Bytes, idt.Status = nil, nil, nil, 0, 0, 0
			idt.DNSMS, idt.ConnectMS, idt.TLSMS, idt.DNSCached = nil, nil, nil, false
			lc := &liveConn{raw: raw, cc: cc, conn: idt, remote: target}
			if len(cs.PeerCertificates) > 0 {
				lc.leaf = cs.PeerCertificates[0]
			}
			g.park(liveKey{spec.sub, spec.site}, lc)
			parked = true
		} else {
			_ = cc.Close()
		}
	}
	t.TotalMS = msp(time.Since(t0))
	return nil
}

// sitePort is the port a site's connections go to: --port, else the HTTPS record's, else 443.
func (g *Gen) sitePort(info *siteInfo) int {
	if g.o.Port != 0 {
		return g.o.Port
	}
	if info.port != 0 {
		return int(info.port)
	}
	return 443
}

// dial connects from the flow's source address, with its device profile's socket options
// and, if the profile names one, from the profile's network namespace.
func (g *Gen) dial(ctx context.Context, spec flowSpec, target netip.AddrPort) (net.Conn, error) {
	d := &net.Dialer{Timeout: g.o.Timeout}
	if spec.addr.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: spec.addr.AsSlice()}
	}
	prof := spec.sub.profile
	if prof != nil {
		d.Control = prof.control
	}
	dialTCP := func(addr string) (net.Conn, error) {
		if prof != nil && prof.Netns != "" {
			return dialInNetns(ctx, d, prof.Netns, addr)
		}
		return d.DialContext(ctx, "tcp", addr)
	}
	if len(g.o.Proxies) == 0 {
		c, err := dialTCP(target.String())
		if err != nil {
			return nil, fmt.Errorf("connect %s: %v", target, err)
		}
		return c, nil
	}
	c, err := dialTCP(g.o.Proxies[0])
	if err != nil {
		return nil, fmt.Errorf("connect proxy %s: %v", g.o.Proxies[0], err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	// Chain: CONNECT to each further proxy through the tunnel, then to the front door by
	// address (never by name: the name would leak the site to the proxy).
	hops := append(append([]string(nil), g.o.Proxies[1:]...), target.String())
	for _, hop := range hops {
		if err := httpConnect(c, hop); err != nil {
			c.Close()
			return nil, err
		}
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

func httpConnect(c net.Conn, hop string) error {
	req := "CONNECT " + hop + " HTTP/1.1\r\nHost: " + hop + "\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		return fmt.Errorf("proxy CONNECT %s: %v", hop, err)
	}
	// Read the response head byte by byte: nothing after it may be consumed, it belongs to TLS.
	var head []byte
	var b [1]byte
	for !strings.HasSuffix(string(head), "\r\n\r\n") {
		if len(head) > 8192 {
			return fmt.Errorf("proxy CONNECT %s: response head too long", hop)
		}
		if _, err := io.ReadFull(c, b[:]); err != nil {
			return fmt.Errorf("proxy CONNECT %s: %v", hop, err)
		}
		head = append(head, b[0])
	}
	line, _, _ := strings.Cut(string(head), "\r\n")
	f := strings.Fields(line)
	if len(f) < 2 || !strings.HasPrefix(f[0], "HTTP/1.") || f[1] != "200" {
		return fmt.Errorf("proxy CONNECT %s refused: %q", hop, line)
	}
	return nil
}

// httpExchange runs the visit's requests on a new connection. It returns the HTTP client
// connection (nil on the lean HTTP/1.1 path), which the caller closes or keeps alive.
func (g *Gen) httpExchange(ctx context.Context, conn *tls.Conn, spec flowSpec, t *Truth) (*http.ClientConn, error) {
	if t.ALPN != "h2" && !spec.session {
		return nil, g.h1Single(ctx, conn, spec, t)
	}
	tr := g.tr
	if spec.sub.tr != nil {
		tr = spec.sub.tr
	}
	cc, err := tr.NewClientConn(context.WithValue(ctx, dialKey{}, net.Conn(conn)), "https", net.JoinHostPort(spec.site, "443"))
	if err != nil {
		return nil, fmt.Errorf("HTTP: %v", err)
	}
	if err := g.exchange(ctx, cc, spec, t); err != nil {
		_ = cc.Close()
		return nil, err
	}
	return cc, nil
}

// exchange fetches the visit's page (and sub-resources) over cc.
func (g *Gen) exchange(ctx context.Context, cc *http.ClientConn, spec flowSpec, t *Truth) error {
	first := true
	get := func(path string, wantBody bool) ([]byte, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+spec.site+path, nil)
		if err != nil {
			return nil, err
		}
		var ttfbStart time.Time
		if first {
			ttfbStart = time.Now()
			tr := &httptrace.ClientTrace{GotFirstResponseByte: func() {
				if t.TTFBMS == nil {
					t.TTFBMS = msp(time.Since(ttfbStart))
				}
			}}
			req = req.WithContext(httptrace.WithClientTrace(ctx, tr))
			first = false
		}
		resp, err := cc.RoundTrip(req)
		if err != nil {
			return nil, fmt.Errorf("HTTP GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		t.Requests++
		if t.Status == 0 || resp.StatusCode >= 400 {
			t.Status = resp.StatusCode
		}
		var body []byte
		var n int64
		if wantBody {
			body, err = io.ReadAll(resp.Body)
			n = int64(len(body))
		} else {
			n, err = io.Copy(io.Discard, resp.Body)
		}
		t.Bytes += n
		if err != nil {
			return nil, fmt.Errorf("HTTP GET %s body: %v", path, err)
		}
		return body, nil
	}
	body, err := get(spec.path, spec.session)
	if err != nil || !spec.session {
		return err
	}
	res := server.PageResources(body)
	if t.ALPN == "h2" {
		var wg sync.WaitGroup
		var mu sync.Mutex
		var firstErr error
		sem := make(chan struct{}, 16)
		for _, p := range res {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				if _, err := get(p, false); err != nil {
					mu.Lock()
					firstErr = cmpErr(firstErr, err)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		return firstErr
	}
	for _, p := range res {
		if _, err := get(p, false); err != nil {
			return err
		}
	}
	return nil
}

var bufPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4096) }}

// h1Single is the lean path for the common load-test case, one HTTP/1.1 request per
// connection: the request is written directly and the response parsed with
// http.ReadResponse, without a Transport's per-connection goroutines and buffers.
func (g *Gen) h1Single(ctx context.Context, conn *tls.Conn, spec flowSpec, t *Truth) error {
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	start := time.Now()
	req := "GET " + spec.path + " HTTP/1.1\r\nHost: " + spec.site + "\r\nUser-Agent: echd-load\r\nConnection: close\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		return fmt.Errorf("HTTP GET %s: %v", spec.path, err)
	}
	br := bufPool.Get().(*bufio.Reader)
	br.Reset(conn)
	defer func() { br.Reset(nil); bufPool.Put(br) }()
	if _, err := br.Peek(1); err != nil {
		return fmt.Errorf("HTTP GET %s: %v", spec.path, err)
	}
	t.TTFBMS = msp(time.Since(start))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return fmt.Errorf("HTTP GET %s: %v", spec.path, err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	t.Requests, t.Status, t.Bytes = 1, resp.StatusCode, n
	if err != nil {
		return fmt.Errorf("HTTP GET %s body: %v", spec.path, err)
	}
	return nil
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }

func summarize(recs []*Truth, elapsed time.Duration) Summary {
	s := Summary{Count: len(recs), DurationS: elapsed.Seconds(), Median: map[string]float64{},
		P95: map[string]float64{}, ErrorKinds: map[string]int{}}
	phases := map[string][]float64{}
	for _, r := range recs {
		if r.Error != nil {
			s.Errors++
			k := *r.Error
			if i := strings.IndexAny(k, ":;"); i > 0 {
				k = k[:i]
			}
			s.ErrorKinds[k]++
			if r.Attempt == 1 && strings.HasPrefix(*r.Error, "ECH rejected; retry") {
				s.Retries++
			}
		}
		if r.ECHAccepted {
			s.ECHAccepted++
		}
		if r.Resumed {
			s.Resumed++
		}
		s.MaxLateMS = math.Max(s.MaxLateMS, r.LateMS)
		if r.Error != nil {
			continue
		}
		for name, v := range map[string]*float64{"dns": r.DNSMS, "connect": r.ConnectMS, "tls": r.TLSMS, "ttfb": r.TTFBMS, "total": r.TotalMS} {
			if v != nil {
				phases[name] = append(phases[name], *v)
			}
		}
	}
	if elapsed > 0 {
		s.Rate = float64(s.Count) / elapsed.Seconds()
	}
	for name, v := range phases {
		sort.Float64s(v)
		s.Median[name] = quantile(v, 0.5)
		s.P95[name] = quantile(v, 0.95)
	}
	return s
}

func quantile(v []float64, q float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	pos := q * float64(len(v)-1)
	lo := int(math.Floor(pos))
	hi := min(lo+1, len(v)-1)
	return v[lo] + (v[hi]-v[lo])*(pos-float64(lo))
}

// ParseSources reads "subscriber_id addr" lines (# comments and blank lines skipped).
func ParseSources(r io.Reader, name string) ([]Source, error) {
	var out []Source
	sc := bufio.NewScanner(r)
	ln := 0
	for sc.Scan() {
		ln++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 {
			return nil, fmt.Errorf("%s:%d: want 'subscriber_id addr', got %q", name, ln, line)
		}
		a, err := netip.ParseAddr(f[1])
		if err != nil {
			return nil, fmt.Errorf("%s:%d: bad address %q", name, ln, f[1])
		}
		out = append(out, Source{Subscriber: f[0], Addr: a})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no sources", name)
	}
	return out, nil
}

// ParseWorkload reads JSON-lines workload items. Keys other than t, subscriber, source,
// site, path and subresources are kept in WorkItem.Extra and copied into the ground truth.
func ParseWorkload(r io.Reader, name string) ([]WorkItem, error) {
	var out []WorkItem
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	ln := 0
	for sc.Scan() {
		ln++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		var it WorkItem
		if err := json.Unmarshal([]byte(line), &it); err != nil {
			return nil, fmt.Errorf("%s:%d: %v", name, ln, err)
		}
		extra, err := workloadExtra([]byte(line))
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %v", name, ln, err)
		}
		it.Extra = extra
		if it.Device, it.Profile, err = deviceAndProfile([]byte(line)); err != nil {
			return nil, fmt.Errorf("%s:%d: %v", name, ln, err)
		}
		if it.T < 0 || math.IsNaN(it.T) || math.IsInf(it.T, 0) {
			return nil, fmt.Errorf("%s:%d: t must be >= 0", name, ln)
		}
		if it.Site == "" || it.Subscriber == "" {
			return nil, fmt.Errorf("%s:%d: 'site' and 'subscriber' are required", name, ln)
		}
		if it.Path != "" && !strings.HasPrefix(it.Path, "/") {
			return nil, fmt.Errorf("%s:%d: path must start with '/'", name, ln)
		}
		if it.Source != "" {
			a, err := netip.ParseAddr(it.Source)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: bad source address %q", name, ln, it.Source)
			}
			it.addr = a
		}
		out = append(out, it)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: empty workload", name)
	}
	return out, nil
}

// deviceAndProfile reads the optional "device" (any JSON scalar, as its text) and
// "profile" (a string) keys of a workload line.
func deviceAndProfile(line []byte) (string, string, error) {
	var v struct {
		Device  json.RawMessage `json:"device"`
		Profile *string         `json:"profile"`
	}
	if err := json.Unmarshal(line, &v); err != nil {
		return "", "", fmt.Errorf("profile must be a string: %v", err)
	}
	dev := strings.Trim(string(v.Device), `"`)
	if dev == "null" {
		dev = ""
	}
	prof := ""
	if v.Profile != nil {
		prof = *v.Profile
	}
	return dev, prof, nil
}

// workloadExtra encodes the keys of one workload line that echd load does not interpret
// (matched as encoding/json matches them to WorkItem: case-insensitively) and that are not
// ground-truth field names, as JSON object members in sorted key order; nil if none.
func workloadExtra(line []byte) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(line, &m); err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		if truthFields[k] || slices.ContainsFunc(workItemFields, func(f string) bool { return strings.EqualFold(f, k) }) {
			continue
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, nil
	}
	sort.Strings(keys)
	var buf bytes.Buffer
	for i, k := range keys {
		if i > 0 {
			buf.WriteByte(',')
		}
		kb, err := json.Marshal(k)
		if err != nil {
			return nil, err
		}
		buf.Write(kb)
		buf.WriteByte(':')
		if err := json.Compact(&buf, m[k]); err != nil {
			return nil, err
		}
	}
	return buf.Bytes(), nil
}

// IsNXDomain reports whether err is an unknown-site DNS error.
func IsNXDomain(err error) bool { return errors.Is(err, dnshttps.ErrNXDomain) }

// SummaryText renders the summary for people.
func SummaryText(s Summary) string {
	var b strings.Builder
	fmt.Fprintf(&b, "flows: %d  errors: %d  ech_accepted: %d  resumed: %d  ech_retries: %d\n", s.Count, s.Errors, s.ECHAccepted, s.Resumed, s.Retries)
	fmt.Fprintf(&b, "duration: %.2fs  rate: %.1f conn/s  max lateness: %.1f ms\n", s.DurationS, s.Rate, s.MaxLateMS)
	for _, p := range []string{"dns", "connect", "tls", "ttfb", "total"} {
		if v, ok := s.Median[p]; ok {
			fmt.Fprintf(&b, "  %-8s median %8.3f ms   p95 %8.3f ms\n", p, v, s.P95[p])
		}
	}
	keys := make([]string, 0, len(s.ErrorKinds))
	for k := range s.ErrorKinds {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "  error %q: %d\n", k, s.ErrorKinds[k])
	}
	return b.String()
}
