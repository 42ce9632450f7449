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
	defer srv.Shutdown()
	ap := netip.MustParseAddrPort(ln.Addr().String())
	g, err := New(Options{RootCAs: ca.Pool(), NoECH: true, KeepAlive: time.Minute, Session: true, PageN: 2})
	if err != nil {
		t.Fatal(err)
	}
	go g.writer()
	sub := g.subscriber("h1", netip.Addr{}, "d1", "")
	info := &siteInfo{addrs: []netip.Addr{ap.Addr()}, port: ap.Port()}
	visit := func(site string) {
		spec := flowSpec{sub: sub, site: site, path: "/page/2", session: true, sched: time.Now()}
		if lc := g.take(liveKey{sub, site}); lc != nil {
			g.reuse(context.Background(), spec, lc, g.newFlowID(), 0)
			return
		}
		tr := Truth{FlowID: g.newFlowID(), Site: site, Subscriber: "h1", Attempt: 1}
		g.connect(context.Background(), spec, info, nil, 4, &tr, time.Now())
		g.emit(&tr)
	}
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
	deadline := time.Now().Add(3 * time.Second)
	var lines []string
	for time.Now().Before(deadline) {
		data, _ := os.ReadFile(logPath)
		lines = strings.Split(strings.TrimSpace(string(data)), "\n")
		if len(lines) >= 2 && lines[0] != "" {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(lines) != 2 {
		t.Fatalf("server logged %d connections, want 2", len(lines))
	}
	var rec frontlog.Record
	_ = json.Unmarshal([]byte(lines[0]), &rec)
	if rec.ALPN == nil || *rec.ALPN != "h2" {
		t.Fatalf("want h2, got %+v", rec.ALPN)
	}
}
