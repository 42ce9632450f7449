package loadgen

import (
	"context"
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cfrbench/ech/internal/frontlog"
	"cfrbench/ech/internal/server"
	"cfrbench/ech/internal/testca"
)

// TestKeepAliveReusesTheConnection: with KeepAlive, a device's second visit to a site goes
// over its first connection (same client_random, reused=true, no handshake), and the server
// logs one connection; another site gets a connection of its own.
func TestKeepAliveReusesTheConnection(t *testing.T) {
	ca, ap, logPath := startOrigin(t)
	g, err := New(Options{RootCAs: ca.Pool(), NoECH: true, KeepAlive: time.Minute, Session: true, PageN: 2})
	if err != nil {
		t.Fatal(err)
	}
	go g.writer()
	sub := g.subscriber("h1", netip.Addr{}, "d1", "")
	visit := func(site string) { visitSite(g, sub, ap, site) }
	visit(server.SiteName(1))
	visit(server.SiteName(1))
	visit(server.SiteName(2))
	g.closeLive()
	close(g.out)
	<-g.wdone
	if len(g.recs) != 3 {
		t.Fatalf("%d ground-truth lines", len(g.recs))
	}
	a, b, c := g.recs[0], g.recs[1], g.recs[2]
	for _, r := range g.recs {
		if r.Error != nil || r.Requests != 3 || r.ClientRandom == nil {
			t.Fatalf("bad visit %+v (error %v)", r, r.Error)
		}
	}
	if a.Reused || !b.Reused || c.Reused || *a.ClientRandom != *b.ClientRandom || *c.ClientRandom == *a.ClientRandom {
		t.Fatalf("reuse wrong: %v/%v/%v", a.Reused, b.Reused, c.Reused)
	}
	if b.TLSMS != nil || b.LocalPort != a.LocalPort {
		t.Fatalf("reused visit claims a handshake or another socket: %+v", b)
	}
	recs := serverLog(t, logPath, 2)
	if len(recs) != 2 {
		t.Fatalf("server logged %d connections, want 2", len(recs))
	}
	if recs[0].ALPN == nil || *recs[0].ALPN != "h2" {
		t.Fatalf("want h2, got %+v", recs[0].ALPN)
	}
}

// TestProfileHTTP2Settings: a profile's h2_* fields are what the server logs as the
// client's HTTP/2 SETTINGS and WINDOW_UPDATE; a device without them sends Go's.
func TestProfileHTTP2Settings(t *testing.T) {
	ca, ap, logPath := startOrigin(t)
	prof := &Profile{Name: "p", H2HeaderTable: 8192, H2FrameSize: 32768, H2StreamWindow: 1 << 20, H2ConnWindow: 4 << 20}
	g, err := New(Options{RootCAs: ca.Pool(), NoECH: true, Session: true, PageN: 1, Profiles: map[string]*Profile{"p": prof}})
	if err != nil {
		t.Fatal(err)
	}
	go g.writer()
	visitSite(g, g.subscriber("h1", netip.Addr{}, "d1", "p"), ap, server.SiteName(1))
	visitSite(g, g.subscriber("h1", netip.Addr{}, "d2", ""), ap, server.SiteName(1))
	close(g.out)
	<-g.wdone
	recs := serverLog(t, logPath, 2)
	if len(recs) != 2 || recs[0].H2Settings == nil || recs[1].H2Settings == nil {
		t.Fatalf("log %+v", recs)
	}
	got := map[string]bool{*recs[0].H2Settings: true, *recs[1].H2Settings: true}
	want := "2:0;4:1048576;5:32768;6:10485760;1:8192|4194304" // Go's order; its increment is the window
	if !got[want] || len(got) != 2 {
		t.Fatalf("h2_settings %v, want %q among two distinct", got, want)
	}
}

func visitSite(g *Gen, sub *subscriber, ap netip.AddrPort, site string) {
	spec := flowSpec{sub: sub, site: site, path: "/page/2", session: true, sched: time.Now()}
	if lc := g.take(liveKey{sub, site}); lc != nil {
		g.reuse(context.Background(), spec, lc, g.newFlowID(), 0)
		return
	}
	info := &siteInfo{addrs: []netip.Addr{ap.Addr()}, port: ap.Port()}
	tr := Truth{FlowID: g.newFlowID(), Site: site, Subscriber: sub.id, Attempt: 1}
	g.connect(context.Background(), spec, info, nil, 4, &tr, time.Now())
	g.emit(&tr)
}

// serverLog waits briefly for n lines in the server's log.
func serverLog(t *testing.T, path string, n int) []frontlog.Record {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	var out []frontlog.Record
	for time.Now().Before(deadline) {
		out = nil
		data, _ := os.ReadFile(path)
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			var r frontlog.Record
			if line != "" && json.Unmarshal([]byte(line), &r) == nil {
				out = append(out, r)
			}
		}
		if len(out) >= n {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return out
}

// startOrigin runs a TLS server (origin mode: no ECH keys) for three sites on loopback.
func startOrigin(t *testing.T) (*testca.CA, netip.AddrPort, string) {
	t.Helper()
	dir := t.TempDir()
	if err := testca.Create(filepath.Join(dir, "ca"), "test CA"); err != nil {
		t.Fatal(err)
	}
	ca, err := testca.Load(filepath.Join(dir, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	sites, _ := server.NewSites(3, nil)
	logPath := filepath.Join(dir, "front.jsonl")
	lg, _ := frontlog.Open(logPath)
	srv := &server.TLSServer{Mode: "origin", CA: ca, Sites: sites, Log: lg}
	if err := srv.Init(); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Shutdown)
	return ca, netip.MustParseAddrPort(ln.Addr().String()), logPath
}
