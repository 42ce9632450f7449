package loadgen

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"testing"
	"time"

	"cfrbench/ech/internal/frontlog"
)

// coalesceServer is an HTTP/2 TLS server on loopback whose certificate for a.example and
// b.example is one certificate naming both (a CDN's shared certificate), and whose
// certificate for c.example names only c.example. It records, per accepted connection, the
// hosts its requests named (frontlog.RequestTally, as the front door logs them).
type coalesceServer struct {
	ap    netip.AddrPort
	roots *x509.CertPool
	mu    sync.Mutex
	conns []*frontlog.RequestTally
}

type tallyKey struct{}

func startCoalesceServer(t *testing.T) *coalesceServer {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := func(serial int64, names ...string) *tls.Certificate {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: names[0]},
			DNSNames: names, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &leafKey.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return &tls.Certificate{Certificate: [][]byte{der, caDER}, PrivateKey: leafKey}
	}
	ab, c := leaf(2, "a.example", "b.example"), leaf(3, "c.example")
	s := &coalesceServer{roots: x509.NewCertPool()}
	s.roots.AddCert(caCert)
	hs := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			r.Context().Value(tallyKey{}).(*frontlog.RequestTally).Note(r.Host, time.Now())
			_, _ = w.Write([]byte("<html></html>"))
		}),
		ConnContext: func(ctx context.Context, _ net.Conn) context.Context {
			tl := &frontlog.RequestTally{}
			tl.Start(time.Now())
			s.mu.Lock()
			s.conns = append(s.conns, tl)
			s.mu.Unlock()
			return context.WithValue(ctx, tallyKey{}, tl)
		},
		TLSConfig: &tls.Config{NextProtos: []string{"h2", "http/1.1"}, MinVersion: tls.VersionTLS13,
			GetCertificate: func(chi *tls.ClientHelloInfo) (*tls.Certificate, error) {
				if chi.ServerName == "c.example" {
					return c, nil
				}
				return ab, nil
			}},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = hs.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = hs.Close() })
	s.ap = netip.MustParseAddrPort(ln.Addr().String())
	return s
}

// hosts returns, per server connection, the hosts it served and how many requests.
func (s *coalesceServer) hosts() [][]frontlog.HostRequests {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out [][]frontlog.HostRequests
	for _, tl := range s.conns {
		var r frontlog.Record
		tl.Fill(&r)
		out = append(out, r.Hosts)
	}
	return out
}

// runCoalesce visits a, b, a, c (one device) and b (another device) through flow(), with
// every site resolving to the server's address, and returns the ground truth.
func runCoalesce(t *testing.T, s *coalesceServer, coalesce bool) []*Truth {
	t.Helper()
	g, err := New(Options{RootCAs: s.roots, NoECH: true, KeepAlive: time.Minute, Coalesce: coalesce,
		DNSCache: true, Port: int(s.ap.Port())})
	if err != nil {
		t.Fatal(err)
	}
	for _, site := range []string{"a.example", "b.example", "c.example"} {
		e := &cacheEntry{info: &siteInfo{addrs: []netip.Addr{s.ap.Addr()}, expires: time.Now().Add(time.Hour)}}
		e.once.Do(func() {})
		g.res.cache[key(site, 4)] = e
	}
	go g.writer()
	d1 := g.subscriber("h1", netip.Addr{}, "d1", "")
	d2 := g.subscriber("h2", netip.Addr{}, "d2", "")
	for _, v := range []struct {
		sub  *subscriber
		site string
	}{{d1, "a.example"}, {d1, "b.example"}, {d1, "a.example"}, {d1, "c.example"}, {d2, "b.example"}} {
		g.flow(context.Background(), flowSpec{sub: v.sub, site: v.site, path: "/", session: true, sched: time.Now()})
	}
	g.closeLive()
	close(g.out)
	<-g.wdone
	for _, r := range g.recs {
		if r.Error != nil || r.ClientRandom == nil || r.ALPN != "h2" {
			t.Fatalf("bad visit %+v (error %v)", r, r.Error)
		}
	}
	return g.recs
}

// TestCoalescing: with Coalesce a device's visit to b.example goes over its open connection
// to a.example (same address, certificate naming both), recorded as coalesced with its
// connection's site; c.example (certificate of its own) and another device's visit to
// b.example get connections of their own. The server sees 3 connections, the first with
// both hosts. Without Coalesce every (device, site) has its own connection (4).
func TestCoalescing(t *testing.T) {
	s := startCoalesceServer(t)
	recs := runCoalesce(t, s, true)
	a1, b1, a2, c1, b2 := recs[0], recs[1], recs[2], recs[3], recs[4]
	if a1.Reused || !b1.Reused || !b1.Coalesced || b1.ConnSite != "a.example" || *b1.ClientRandom != *a1.ClientRandom {
		t.Fatalf("b.example not coalesced onto a.example: %+v", b1)
	}
	if !a2.Reused || a2.Coalesced || *a2.ClientRandom != *a1.ClientRandom {
		t.Fatalf("second a.example visit not reused: %+v", a2)
	}
	if c1.Reused || *c1.ClientRandom == *a1.ClientRandom {
		t.Fatalf("c.example coalesced although the certificate does not cover it: %+v", c1)
	}
	if b2.Reused || *b2.ClientRandom == *a1.ClientRandom {
		t.Fatalf("another device's visit went over d1's connection: %+v", b2)
	}
	hosts := s.hosts()
	if len(hosts) != 3 {
		t.Fatalf("server saw %d connections, want 3: %+v", len(hosts), hosts)
	}
	if len(hosts[0]) != 2 || hosts[0][0].Host != "a.example" || hosts[0][0].Requests != 2 ||
		hosts[0][1].Host != "b.example" || hosts[0][1].Requests != 1 {
		t.Fatalf("first connection's hosts %+v", hosts[0])
	}

	s2 := startCoalesceServer(t)
	recs = runCoalesce(t, s2, false)
	for _, r := range recs {
		if r.Coalesced {
			t.Fatalf("coalesced with Coalesce off: %+v", r)
		}
	}
	if n := len(s2.hosts()); n != 4 {
		t.Fatalf("without coalescing the server saw %d connections, want 4", n)
	}
}
