package loadgen

import (
	"context"
	"crypto/tls"
	"net/netip"
	"strings"
	"testing"
	"time"

	"cfrbench/ech/internal/chello"
	"cfrbench/ech/internal/frontlog"
)

const twoProfiles = `{
 "phone":  {"ttl": 64, "mss": 1360, "rcvbuf": 65536, "alpn": ["h2", "http/1.1"], "curves": ["X25519"]},
 "laptop": {"ttl": 128, "hop_limit": 128, "mss": 1440, "min_tls": "1.2",
            "cipher_suites": ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"], "alpn": ["http/1.1"],
            "curves": ["P256", "X25519"]}
}`

// firstHello dials a loopback listener that saves SYNs with the profile's socket options
// and TLS config, and returns the SYN and the ClientHello the server received.
func firstHello(t *testing.T, p *Profile) (*frontlog.SYN, *chello.ClientHello) {
	t.Helper()
	ln, err := frontlog.Listen("127.0.0.1:0", true)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type got struct {
		syn []byte
		ch  *chello.ClientHello
	}
	res := make(chan got, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			res <- got{}
			return
		}
		defer c.Close()
		syn, _ := frontlog.Transport(c)
		msg, _, _ := chello.ReadHandshakeMessage(c, nil)
		ch, _ := chello.Parse(msg)
		res <- got{syn, ch}
	}()
	g, err := New(Options{Profiles: map[string]*Profile{p.Name: p}, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	sub := g.subscriber("h1", netip.Addr{}, "d1", p.Name)
	target := netip.MustParseAddrPort(ln.Addr().String())
	raw, err := g.dial(context.Background(), flowSpec{sub: sub}, target)
	if err != nil {
		t.Fatal(err)
	}
	cfg := sub.cfg.Clone()
	cfg.ServerName = "a.example"
	_ = raw.SetDeadline(time.Now().Add(2 * time.Second))
	go func() { _ = tls.Client(raw, cfg).Handshake() }()
	r := <-res
	raw.Close()
	if r.ch == nil {
		t.Fatal("no ClientHello received")
	}
	return frontlog.ParseSYN(r.syn), r.ch
}

// TestProfilesChangeWhatTheServerSees: two profiles give different TTL, MSS, JA4 and
// groups at the server, each exactly as configured.
func TestProfilesChangeWhatTheServerSees(t *testing.T) {
	profs, err := ParseProfiles(strings.NewReader(twoProfiles), "p.json")
	if err != nil {
		t.Fatal(err)
	}
	synA, chA := firstHello(t, profs["phone"])
	synB, chB := firstHello(t, profs["laptop"])
	if synA.TTL != 64 || synB.TTL != 128 || *synA.MSS != 1360 || *synB.MSS != 1440 {
		t.Fatalf("SYNs %+v / %+v", synA, synB)
	}
	ja4A, ja4B := chello.JA4(chA), chello.JA4(chB)
	if ja4A == ja4B || !strings.Contains(ja4A[:11], "h2") || !strings.HasSuffix(ja4B[:10], "h1") {
		t.Fatalf("JA4 %s / %s", ja4A, ja4B)
	}
	if g := chello.Groups(chA); g != "001d" {
		t.Fatalf("phone groups %q", g)
	}
	// crypto/tls orders the groups itself: only the set is the profile's.
	if g := chello.Groups(chB); g != "001d,0017" {
		t.Fatalf("laptop groups %q", g)
	}
}

func TestProfilesRejectTypos(t *testing.T) {
	for _, bad := range []string{`{"x": {"tll": 64}}`, `{"x": {"ttl": 300}}`, `{"x": {"cipher_suites": ["NOPE"]}}`,
		`{"x": {"min_tls": "1.1"}}`, `{"x": null}`} {
		if _, err := ParseProfiles(strings.NewReader(bad), "p.json"); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
	if _, err := New(Options{Workload: []WorkItem{{Site: "a", Subscriber: "s", Profile: "ghost"}}}); err == nil {
		t.Fatal("workload naming an undefined profile accepted")
	}
}

// TestTicketCachePerDevice: a device keeps one session cache across its addresses (v4,
// v6, temporary v6); without a device name the cache is per (subscriber, address).
func TestTicketCachePerDevice(t *testing.T) {
	g, _ := New(Options{Resumption: true})
	a := g.subscriber("h1", netip.MustParseAddr("198.18.0.10"), "d1", "")
	b := g.subscriber("h1", netip.MustParseAddr("2001:db8::10"), "d1", "")
	c := g.subscriber("h1", netip.MustParseAddr("198.18.0.10"), "d2", "")
	if a != b || a.cfg.ClientSessionCache == nil || a == c {
		t.Fatal("cache not per device")
	}
	x := g.subscriber("h2", netip.MustParseAddr("198.18.0.11"), "", "")
	y := g.subscriber("h2", netip.MustParseAddr("198.18.0.12"), "", "")
	if x == y {
		t.Fatal("device-less identities merged across addresses")
	}
	items, err := ParseWorkload(strings.NewReader(`{"t":0,"subscriber":"h1","site":"a","device":7,"profile":"phone"}`), "w")
	if err != nil || items[0].Device != "7" || items[0].Profile != "phone" || !strings.Contains(string(items[0].Extra), `"profile":"phone"`) {
		t.Fatalf("device/profile not parsed: %+v %v", items, err)
	}
}
