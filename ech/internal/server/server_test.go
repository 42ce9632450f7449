package server

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"cfrbench/ech/internal/echkeys"
	"cfrbench/ech/internal/frontlog"
	"cfrbench/ech/internal/testca"
)

type env struct {
	t      *testing.T
	dir    string
	ca     *testca.CA
	pool   *x509.CertPool
	keyDir string
	ks     *KeyStore
	sites  *Sites
	addr   string
	log    string
	olog   string // split: the origin's log
	front  *Front
	shared *TLSServer
}

// setup starts a front door: "shared" (echd decrypts ECH), "shared-tls" (crypto/tls
// decrypts ECH) or "split" (front + origin). curves restricts the terminating server's key
// exchange groups (to force HelloRetryRequest).
func setup(t *testing.T, mode string, curves []tls.CurveID) *env {
	t.Helper()
	return setupResumption(t, mode, curves, true)
}

// setupResumption is setup with --resumption given (servers issue and accept tickets).
func setupResumption(t *testing.T, mode string, curves []tls.CurveID, resumption bool) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{t: t, dir: dir, keyDir: filepath.Join(dir, "keys"), log: filepath.Join(dir, "front.jsonl"),
		olog: filepath.Join(dir, "origin.jsonl")}
	if err := testca.Create(filepath.Join(dir, "ca"), "test CA"); err != nil {
		t.Fatal(err)
	}
	var err error
	if e.ca, err = testca.Load(filepath.Join(dir, "ca")); err != nil {
		t.Fatal(err)
	}
	e.pool = e.ca.Pool()
	if _, err := echkeys.WriteNew(e.keyDir, "cdn.example", 1, 64); err != nil {
		t.Fatal(err)
	}
	if e.ks, err = NewKeyStore(e.keyDir); err != nil {
		t.Fatal(err)
	}
	e.sites, _ = NewSites(20, []string{"pineapple-pizza.example"})
	lg, err := frontlog.Open(e.log)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = ln.Addr().String()
	local := &TLSServer{Mode: strings.TrimSuffix(mode, "-tls"), CA: e.ca, Sites: e.sites, PublicName: "cdn.example",
		Keys: e.ks, Resumption: resumption, Log: lg, SelfDecrypt: mode == "shared"}
	if mode != "split" {
		local.Curves = curves
	}
	if err := local.Init(); err != nil {
		t.Fatal(err)
	}
	if mode != "split" {
		e.shared = local
		go func() { _ = local.Serve(ln) }()
		t.Cleanup(local.Shutdown)
		return e
	}
	oln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	olog, _ := frontlog.Open(e.olog)
	origin := &TLSServer{Mode: "origin", CA: e.ca, Sites: e.sites, Resumption: resumption, Log: olog, Curves: curves}
	if err := origin.Init(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = origin.Serve(oln) }()
	e.front = &Front{Keys: e.ks, PublicName: "cdn.example", Default: oln.Addr().String(), Local: local, Log: lg}
	e.front.Init()
	go func() { _ = e.front.Serve(ln) }()
	t.Cleanup(func() { e.front.Shutdown(); origin.Shutdown() })
	return e
}

func (e *env) clientConfig(site string, ech []byte, cache tls.ClientSessionCache) *tls.Config {
	return &tls.Config{ServerName: site, RootCAs: e.pool, MinVersion: tls.VersionTLS13,
		EncryptedClientHelloConfigList: ech, ClientSessionCache: cache, NextProtos: []string{"http/1.1"}}
}

// get does one HTTP/1.1 request over a fresh ECH connection.
func (e *env) get(cfg *tls.Config, path string) (tls.ConnectionState, string, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", e.addr, cfg)
	if err != nil {
		return tls.ConnectionState{}, "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: "+cfg.ServerName+"\r\nConnection: close\r\n\r\n"); err != nil {
		return c.ConnectionState(), "", err
	}
	body, err := io.ReadAll(bufio.NewReader(c))
	return c.ConnectionState(), string(body), err
}

func (e *env) records(t *testing.T, n int) []frontlog.Record {
	t.Helper()
	return readLog(t, e.log, n)
}

// readLog waits (briefly) for n records in the log file at path, sorted by conn_id.
func readLog(t *testing.T, path string, n int) []frontlog.Record {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		data, _ := os.ReadFile(path)
		var out []frontlog.Record
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			var r frontlog.Record
			if line != "" && json.Unmarshal([]byte(line), &r) == nil {
				out = append(out, r)
			}
		}
		if len(out) >= n || time.Now().After(deadline) {
			// Lines are written when connections close; accept order is conn_id order.
			sort.Slice(out, func(i, j int) bool { return out[i].ConnID < out[j].ConnID })
			return out
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func configList(t *testing.T, dir string) []byte {
	keys, err := echkeys.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return echkeys.AdvertisedConfigList(keys)
}

func TestECHAcceptedBothModes(t *testing.T) {
	for _, mode := range []string{"shared", "shared-tls", "split"} {
		t.Run(mode, func(t *testing.T) {
			e := setup(t, mode, nil)
			cs, body, err := e.get(e.clientConfig("pineapple-pizza.example", configList(t, e.keyDir), nil), "/")
			if err != nil {
				t.Fatal(err)
			}
			if !cs.ECHAccepted {
				t.Fatal("ECH not accepted")
			}
			wantBy := map[string]string{"shared": "shared", "shared-tls": "shared", "split": "origin"}[mode]
			if !strings.Contains(body, "served by "+wantBy) || !strings.Contains(body, "pineapple-pizza.example") {
				t.Fatalf("unexpected body %q", body)
			}
			recs := e.records(t, 1)
			r := recs[len(recs)-1]
			if r.ECH != "accepted" || r.InnerSNI == nil || *r.InnerSNI != "pineapple-pizza.example" ||
				r.OuterSNI == nil || *r.OuterSNI != "cdn.example" || r.PeerAddr != "127.0.0.1" || r.Mode != strings.TrimSuffix(mode, "-tls") {
				t.Fatalf("bad log record %+v", r)
			}
			if r.ClientRandom == nil || len(*r.ClientRandom) != 64 || r.HandshakeMS == nil {
				t.Fatalf("log record lacks client_random or handshake_ms: %+v", r)
			}
		})
	}
}

func TestHelloRetryRequest(t *testing.T) {
	// The terminating server only accepts P-256, so it answers the client's
	// X25519MLKEM768/X25519 key shares with HelloRetryRequest; whoever decrypted ECH must
	// decrypt the second ClientHello with the same HPKE context and pass its inner hello on.
	for _, mode := range []string{"shared", "shared-tls", "split"} {
		t.Run(mode, func(t *testing.T) {
			e := setup(t, mode, []tls.CurveID{tls.CurveP256})
			cs, body, err := e.get(e.clientConfig("site-0003.example", configList(t, e.keyDir), nil), "/")
			if err != nil {
				t.Fatal(err)
			}
			if !cs.ECHAccepted || !cs.HelloRetryRequest || !strings.Contains(body, "site-0003.example") {
				t.Fatalf("ECH accepted %v, HRR %v", cs.ECHAccepted, cs.HelloRetryRequest)
			}
			recs := e.records(t, 1)
			if r := recs[len(recs)-1]; r.ECH != "accepted" || *r.InnerSNI != "site-0003.example" {
				t.Fatalf("bad record %+v", r)
			}
		})
	}
}

func TestRotationRetryConfigs(t *testing.T) {
	for _, mode := range []string{"shared", "shared-tls", "split"} {
		t.Run(mode, func(t *testing.T) {
			e := setup(t, mode, nil)
			stale := configList(t, e.keyDir)
			old, _ := filepath.Glob(filepath.Join(e.keyDir, "*.ech"))
			if _, err := echkeys.WriteNew(e.keyDir, "cdn.example", 1, 64); err != nil {
				t.Fatal(err)
			}
			for _, p := range old {
				_ = os.Remove(p)
			}
			if err := e.ks.Reload(); err != nil {
				t.Fatal(err)
			}
			_, _, err := e.get(e.clientConfig("site-0001.example", stale, nil), "/")
			var rej *tls.ECHRejectionError
			if !errors.As(err, &rej) || len(rej.RetryConfigList) == 0 {
				t.Fatalf("want ECHRejectionError with retry configs, got %v", err)
			}
			cs, _, err := e.get(e.clientConfig("site-0001.example", rej.RetryConfigList, nil), "/")
			if err != nil || !cs.ECHAccepted {
				t.Fatalf("retry with retry configs: %v (accepted %v)", err, cs.ECHAccepted)
			}
			recs := e.records(t, 2)
			if recs[0].ECH != "rejected" || recs[0].InnerSNI != nil || *recs[0].OuterSNI != "cdn.example" {
				t.Fatalf("rejected connection logged as %+v", recs[0])
			}
		})
	}
}

func TestResumptionLogged(t *testing.T) {
	for _, mode := range []string{"shared", "shared-tls", "split"} {
		t.Run(mode, func(t *testing.T) {
			e := setup(t, mode, nil)
			cache := tls.NewLRUClientSessionCache(8)
			cfg := e.clientConfig("site-0005.example", configList(t, e.keyDir), cache)
			for i := 0; i < 3; i++ {
				cs, _, err := e.get(cfg, "/")
				if err != nil {
					t.Fatal(err)
				}
				if cs.DidResume != (i > 0) {
					t.Fatalf("connection %d: DidResume=%v", i, cs.DidResume)
				}
			}
			recs := e.records(t, 3)
			if recs[0].Resumed || recs[0].PSKIDHash != nil {
				t.Fatalf("first connection logged as resumed: %+v", recs[0])
			}
			for _, r := range recs[1:] {
				if !r.Resumed || r.PSKIDHash == nil || len(*r.PSKIDHash) != 16 {
					t.Fatalf("resumed connection logged as %+v", r)
				}
			}
		})
	}
}

// TestIssuedTicketHashesLinkResumption: every resumed connection's psk_id_hash is one of
// the issued_ticket_hashes of the connection before it (the Go client caches the newest
// ticket per server name). Split mode: the front cannot see tickets (null), the origin's
// log has them; the two logs join on client_random.
func TestIssuedTicketHashesLinkResumption(t *testing.T) {
	for _, mode := range []string{"shared", "shared-tls", "split"} {
		t.Run(mode, func(t *testing.T) {
			e := setup(t, mode, nil)
			cache := tls.NewLRUClientSessionCache(8)
			cfg := e.clientConfig("site-0006.example", configList(t, e.keyDir), cache)
			const n = 4
			for i := 0; i < n; i++ {
				cs, _, err := e.get(cfg, "/")
				if err != nil {
					t.Fatal(err)
				}
				if !cs.ECHAccepted || cs.DidResume != (i > 0) {
					t.Fatalf("connection %d: ECH %v, DidResume %v", i, cs.ECHAccepted, cs.DidResume)
				}
			}
			front := e.records(t, n)
			if len(front) != n {
				t.Fatalf("%d front records, want %d", len(front), n)
			}
			issuer := front // where the tickets are visible
			if mode == "split" {
				for _, r := range front {
					if r.IssuedTicketHashes != nil {
						t.Fatalf("split front claims to see tickets: %+v", r)
					}
				}
				origin := readLog(t, e.olog, n)
				byRandom := map[string]frontlog.Record{}
				for _, r := range origin {
					byRandom[*r.ClientRandom] = r
				}
				issuer = nil
				for _, r := range front {
					o, ok := byRandom[*r.ClientRandom]
					if !ok {
						t.Fatalf("front record %s not in the origin's log", *r.ClientRandom)
					}
					if (o.PSKIDHash == nil) != (r.PSKIDHash == nil) || (o.PSKIDHash != nil && *o.PSKIDHash != *r.PSKIDHash) {
						t.Fatalf("front and origin disagree on psk_id_hash: %+v vs %+v", r, o)
					}
					issuer = append(issuer, o)
				}
			}
			seen := map[string]bool{}
			for i, r := range issuer {
				if len(r.IssuedTicketHashes) != 1 || len(r.IssuedTicketHashes[0]) != 16 {
					t.Fatalf("connection %d: issued_ticket_hashes %v", i, r.IssuedTicketHashes)
				}
				if seen[r.IssuedTicketHashes[0]] {
					t.Fatalf("ticket hash %s issued twice", r.IssuedTicketHashes[0])
				}
				seen[r.IssuedTicketHashes[0]] = true
				if i == 0 {
					continue
				}
				if front[i].PSKIDHash == nil || !slices.Contains(issuer[i-1].IssuedTicketHashes, *front[i].PSKIDHash) {
					t.Fatalf("connection %d: psk_id_hash %v not among the previous connection's issued %v",
						i, front[i].PSKIDHash, issuer[i-1].IssuedTicketHashes)
				}
			}
		})
	}
}

func TestIssuedTicketHashesEmptyWithoutResumption(t *testing.T) {
	for _, mode := range []string{"shared", "shared-tls", "split"} {
		t.Run(mode, func(t *testing.T) {
			e := setupResumption(t, mode, nil, false)
			cfg := e.clientConfig("site-0006.example", configList(t, e.keyDir), tls.NewLRUClientSessionCache(8))
			for i := 0; i < 2; i++ {
				if cs, _, err := e.get(cfg, "/"); err != nil || cs.DidResume {
					t.Fatalf("connection %d: err %v, resumed %v", i, err, cs.DidResume)
				}
			}
			recs := e.records(t, 2)
			if mode == "split" {
				recs = readLog(t, e.olog, 2)
			}
			if len(recs) != 2 {
				t.Fatalf("%d records", len(recs))
			}
			for _, r := range recs {
				if r.IssuedTicketHashes == nil || len(r.IssuedTicketHashes) != 0 || r.PSKIDHash != nil {
					t.Fatalf("resumption off, yet logged %+v", r)
				}
			}
		})
	}
}

func TestUnknownSiteFails(t *testing.T) {
	e := setup(t, "shared", nil)
	if _, _, err := e.get(e.clientConfig("nosuch.example", configList(t, e.keyDir), nil), "/"); err == nil {
		t.Fatal("handshake for an unknown site succeeded")
	}
	recs := e.records(t, 1)
	if recs[0].Error == nil || !strings.Contains(*recs[0].Error, "unknown site") {
		t.Fatalf("unknown site not logged: %+v", recs[0])
	}
}

// TestGarbageDoesNotStopService sends truncated/mutated ClientHellos and random bytes
// while a well-formed client keeps connecting.
func TestGarbageDoesNotStopService(t *testing.T) {
	for _, mode := range []string{"shared", "shared-tls", "split"} {
		t.Run(mode, func(t *testing.T) {
			e := setup(t, mode, nil)
			ech := configList(t, e.keyDir)
			// Capture one real ClientHello's records to mutate.
			c, s := net.Pipe()
			go func() { _ = tls.Client(c, e.clientConfig("site-0001.example", ech, nil)).Handshake() }()
			raw := make([]byte, 4096)
			_ = s.SetDeadline(time.Now().Add(2 * time.Second))
			n, _ := s.Read(raw)
			raw = raw[:n]
			s.Close()
			var wg sync.WaitGroup
			stop := make(chan struct{})
			var good, bad int
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					cs, _, err := e.get(e.clientConfig("site-0002.example", ech, nil), "/")
					if err == nil && cs.ECHAccepted {
						good++
					} else {
						bad++
					}
				}
			}()
			r := rand.New(rand.NewPCG(3, 4))
			for i := 0; i < 600; i++ {
				conn, err := net.Dial("tcp", e.addr)
				if err != nil {
					t.Fatal(err)
				}
				var payload []byte
				switch i % 3 {
				case 0:
					payload = raw[:r.IntN(len(raw))]
				case 1:
					payload = append([]byte(nil), raw...)
					payload[5+r.IntN(len(raw)-5)] ^= byte(1 + r.IntN(255))
				default:
					payload = make([]byte, r.IntN(300))
					for j := range payload {
						payload[j] = byte(r.Uint32())
					}
				}
				_, _ = conn.Write(payload)
				conn.Close()
			}
			close(stop)
			wg.Wait()
			if good == 0 || bad > 0 {
				t.Fatalf("well-formed clients: %d ok, %d failed", good, bad)
			}
		})
	}
}
