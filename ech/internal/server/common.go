// Package server holds the TLS endpoints of the testbed: the shared-mode ECH front door
// (terminates TLS), the split-mode front door (decrypts ECH, forwards the reconstructed
// ClientHelloInner to an origin without terminating TLS) and the origin backend.
package server

import (
	"bytes"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"cfrbench/ech/internal/chello"
	"cfrbench/ech/internal/echkeys"
	"cfrbench/ech/internal/frontlog"
)

// SiteName is the name of the i-th virtual site (1-based).
func SiteName(i int) string { return fmt.Sprintf("site-%04d.example", i) }

// Sites is the set of virtual site names a server holds certificates for.
type Sites struct{ m map[string]struct{} }

// NewSites builds site-0001.example..site-<count>.example plus the named sites.
func NewSites(count int, named []string) (*Sites, error) {
	if count < 0 || count > 9999 {
		return nil, fmt.Errorf("--sites %d out of range 0..9999", count)
	}
	s := &Sites{m: make(map[string]struct{}, count+len(named))}
	for i := 1; i <= count; i++ {
		s.m[SiteName(i)] = struct{}{}
	}
	for _, n := range named {
		n = strings.ToLower(strings.TrimSuffix(n, "."))
		if !echkeys.ValidName(n) {
			return nil, fmt.Errorf("invalid site name %q", n)
		}
		s.m[n] = struct{}{}
	}
	return s, nil
}

// Has reports whether name is a configured site.
func (s *Sites) Has(name string) bool { _, ok := s.m[strings.ToLower(name)]; return ok }

// Len is the number of sites.
func (s *Sites) Len() int { return len(s.m) }

// keySet is one immutable generation of loaded ECH keys.
type keySet struct {
	keys []*echkeys.Key
	all  []tls.EncryptedClientHelloKey
	// byID puts the key matching a config_id first, so Go's trial decryption succeeds on the
	// first attempt instead of trying every loaded key (RFC 9849 §7.1 asks servers to use
	// config_id to pick the key).
	byID map[uint8][]tls.EncryptedClientHelloKey
	dec  []*chello.DecryptKey
}

// KeyStore holds the current ECH keys; Reload swaps them atomically (SIGHUP).
type KeyStore struct {
	dir string
	cur atomic.Pointer[keySet]
}

// NewKeyStore loads dir (a key directory or one key file).
func NewKeyStore(dir string) (*KeyStore, error) {
	ks := &KeyStore{dir: dir}
	return ks, ks.Reload()
}

// Reload re-reads the key directory; on error the previous keys stay in force.
func (ks *KeyStore) Reload() error {
	keys, err := echkeys.LoadDir(ks.dir)
	if err != nil {
		return err
	}
	set := &keySet{keys: keys, all: echkeys.TLSKeys(keys), byID: map[uint8][]tls.EncryptedClientHelloKey{}}
	for i, k := range keys {
		ordered := make([]tls.EncryptedClientHelloKey, 0, len(keys))
		ordered = append(ordered, set.all[i])
		for j := range set.all {
			if j != i {
				ordered = append(ordered, set.all[j])
			}
		}
		set.byID[k.ConfigID] = ordered
		set.dec = append(set.dec, &chello.DecryptKey{ConfigID: k.ConfigID, Config: k.Config, Private: k.HPKEPrivateKey(), Suites: k.Suites})
	}
	ks.cur.Store(set)
	return nil
}

// ConfigListBase64 is the advertised ECHConfigList (what DNS publishes).
func (ks *KeyStore) ConfigListBase64() string { return echkeys.AdvertisedBase64(ks.cur.Load().keys) }

// Count is the number of loaded keys.
func (ks *KeyStore) Count() int { return len(ks.cur.Load().keys) }

func (ks *KeyStore) forConfigID(id uint8, known bool) []tls.EncryptedClientHelloKey {
	set := ks.cur.Load()
	if known {
		if k, ok := set.byID[id]; ok {
			return k
		}
	}
	return set.all
}

func (ks *KeyStore) decryptKeys() []*chello.DecryptKey { return ks.cur.Load().dec }

// connState is everything logged about one client connection, filled in as it goes.
type connState struct {
	id        uint64
	mode      string
	accepted  time.Time
	peer      net.Addr
	local     net.Addr
	bytesIn   atomic.Int64
	bytesOut  atomic.Int64
	capturing bool
	head      []byte // raw bytes read while capturing (the ClientHello records)

	pre          bool // ECH decrypted by the front door itself (shared self-decrypt)
	echOffered   bool
	echState     string
	outerSNI     string
	innerSNI     string
	sni          string // effective server name the handshake used
	clientRandom []byte
	pskCandidate *string
	pskHash      *string
	// issued holds TicketHash of each session ticket sent on this connection (appended by
	// the per-connection WrapSession during the handshake). ticketsHidden: the connection
	// was relayed to an origin (split front), which alone sees its tickets.
	issued        []string
	ticketsHidden bool
	resumed       bool
	alpn          string
	route         string
	hsDone        time.Time
	err           error
	// Fingerprints (see frontlog.Record): saved SYN and handshake RTT read at accept, JA4
	// and groups of the hello that came from the network, the HTTP/2 preface seen by h2Sniff.
	syn    []byte
	rttUS  uint32
	ja4    string
	groups string
	h2     atomic.Pointer[string]
	// reqs: the HTTP requests served on this connection, per host (shared mode: the front
	// door serves them; see noteRequests).
	reqs frontlog.RequestTally

	log  *frontlog.Logger
	once sync.Once
}

const headCap = 20 << 10

var connIDs atomic.Uint64

func newConnState(c net.Conn, mode string, log *frontlog.Logger) *connState {
	st := &connState{
		id: connIDs.Add(1), mode: mode, accepted: time.Now(), peer: c.RemoteAddr(),
		local: c.LocalAddr(), capturing: true, log: log, echState: "none",
	}
	st.syn, st.rttUS = frontlog.Transport(c)
	st.reqs.Start(st.accepted)
	return st
}

// fingerprintHello records the JA4 and supported groups of the hello read from the network.
func (st *connState) fingerprintHello(ch *chello.ClientHello) {
	if st.ja4 == "" && ch != nil {
		st.ja4, st.groups = chello.JA4(ch), chello.Groups(ch)
	}
}

// Write implements io.Writer for tls.Config.KeyLogWriter: the client random of the
// handshake that actually ran (ClientHelloInner's when ECH was accepted) is the second
// field of the first key-log line.
func (st *connState) Write(p []byte) (int, error) {
	if st.clientRandom == nil {
		f := strings.Fields(string(p))
		if len(f) >= 3 && len(f[1]) == 64 {
			if b, err := hex.DecodeString(f[1]); err == nil {
				st.clientRandom = b
			}
		}
	}
	return len(p), nil
}

func (st *connState) finish() {
	st.once.Do(func() {
		now := time.Now()
		pa, pp := frontlog.SplitAddr(st.peer)
		la, lp := frontlog.SplitAddr(st.local)
		rec := &frontlog.Record{
			TS:         float64(st.accepted.UnixNano()) / 1e9,
			ConnID:     st.id,
			PeerAddr:   pa,
			PeerPort:   pp,
			LocalAddr:  la,
			LocalPort:  lp,
			OuterSNI:   frontlog.Str(st.outerSNI),
			InnerSNI:   frontlog.Str(st.innerSNI),
			ECH:        st.echState,
			Resumed:    st.resumed,
			PSKIDHash:  st.pskHash,
			ALPN:       frontlog.Str(st.alpn),
			BytesIn:    st.bytesIn.Load(),
			BytesOut:   st.bytesOut.Load(),
			DurationMS: ms(now.Sub(st.accepted)),
			Mode:       st.mode,
			Route:      frontlog.Str(st.route),
		}
		if !st.ticketsHidden {
			rec.IssuedTicketHashes = st.issued
			if rec.IssuedTicketHashes == nil {
				rec.IssuedTicketHashes = []string{}
			}
		}
		if st.clientRandom != nil {
			rec.ClientRandom = frontlog.Hex(st.clientRandom)
		}
		if !st.hsDone.IsZero() && st.err == nil {
			h := ms(st.hsDone.Sub(st.accepted))
			rec.HandshakeMS = &h
		}
		if st.err != nil {
			e := oneLine(st.err.Error())
			rec.Error = &e
		}
		rec.SYN = frontlog.ParseSYN(st.syn)
		if st.rttUS > 0 {
			v := st.rttUS
			rec.RTTUS = &v
		}
		rec.JA4, rec.TLSGroups, rec.H2Settings = frontlog.Str(st.ja4), frontlog.Str(st.groups), st.h2.Load()
		st.reqs.Fill(rec)
		st.head = nil
		st.log.Write(rec)
	})
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }

// stateful is implemented by the connection wrappers handed to crypto/tls, so that its
// callbacks (which only see the net.Conn) can find the connection's state.
type stateful interface{ state() *connState }

func stateOf(c net.Conn) *connState {
	if s, ok := c.(stateful); ok {
		return s.state()
	}
	return nil
}

// trackedConn counts bytes, captures the first bytes (the ClientHello) and logs on Close.
type trackedConn struct {
	net.Conn
	st *connState
}

func (c *trackedConn) state() *connState { return c.st }

func (c *trackedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.st.bytesIn.Add(int64(n))
		if c.st.capturing && len(c.st.head) < headCap {
			c.st.head = append(c.st.head, p[:min(n, headCap-len(c.st.head))]...)
		}
	}
	return n, err
}

func (c *trackedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.st.bytesOut.Add(int64(n))
	return n, err
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.st.finish()
	return err
}

// prefixConn replays bytes already read from the network (split-mode fallback: the front
// read the ClientHello before deciding to terminate TLS itself).
type prefixConn struct {
	*trackedConn
	prefix []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.trackedConn.Read(p)
}

// innerConn feeds crypto/tls ClientHelloInner instead of the ClientHelloOuter that came
// from the network: first the reconstructed inner hello's records, then the client's
// records, with a second ClientHello (after HelloRetryRequest) decrypted and replaced the
// same way. After the client's first application_data record it is a plain pass-through.
type innerConn struct {
	*trackedConn
	pending []byte
	d       *chello.Decrypted
	done    bool
}

func (c *innerConn) Read(p []byte) (int, error) {
	for len(c.pending) == 0 {
		if c.done {
			return c.trackedConn.Read(p)
		}
		var hdr [5]byte
		if _, err := io.ReadFull(c.trackedConn, hdr[:]); err != nil {
			return 0, err
		}
		n := int(hdr[3])<<8 | int(hdr[4])
		if n > chello.MaxRecordPayload {
			return 0, fmt.Errorf("client sent oversized record (%d bytes)", n)
		}
		if hdr[0] == chello.RecordHandshake {
			msg, _, err := chello.ReadHandshakeMessage(io.MultiReader(bytes.NewReader(hdr[:]), c.trackedConn), nil)
			if err != nil {
				return 0, err
			}
			ch2, err := chello.Parse(msg)
			if err != nil {
				return 0, err
			}
			inner2, err := chello.DecryptSecond(ch2, c.d)
			if err != nil {
				return 0, err
			}
			c.pending = chello.Records(inner2.Raw, uint16(hdr[1])<<8|uint16(hdr[2]))
			continue
		}
		rec := make([]byte, 5+n)
		copy(rec, hdr[:])
		if _, err := io.ReadFull(c.trackedConn, rec[5:]); err != nil {
			return 0, err
		}
		c.pending = rec
		c.done = hdr[0] == chello.RecordAppData
	}
	n := copy(p, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}

// chanListener hands connections whose TLS handshake already completed (and was logged)
// to net/http, which then serves HTTP/1.1 or HTTP/2 according to the negotiated ALPN.
type chanListener struct {
	ch     chan net.Conn
	done   chan struct{}
	once   sync.Once
	laddr  net.Addr
	closed atomic.Bool
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{ch: make(chan net.Conn, 256), done: make(chan struct{}), laddr: addr}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) deliver(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.done:
		_ = c.Close()
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { l.closed.Store(true); close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.laddr }

// ParseListen validates a listen address (host:port, host may be empty or bracketed v6).
func ParseListen(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("invalid listen address %q: %v", s, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("invalid port in %q", s)
	}
	if host != "" && net.ParseIP(host) == nil {
		return fmt.Errorf("listen address %q: host must be an IP literal", s)
	}
	return nil
}

var (
	errUnknownSite = errors.New("unknown site")
	errClosedEarly = errors.New("connection closed before a ClientHello")
)

// readClientHello reads and parses the connection's first handshake message within
// timeout. Both the split front and the self-decrypting server start this way; on failure
// it records why on st (the log line says it) and closes the connection.
func readClientHello(tc *trackedConn, st *connState, timeout time.Duration) (*chello.ClientHello, []byte, bool) {
	_ = tc.Conn.SetReadDeadline(time.Now().Add(timeout))
	msg, consumed, err := chello.ReadHandshakeMessage(tc, nil)
	if err != nil {
		st.err = err
		if len(consumed) == 0 && errors.Is(err, io.EOF) {
			st.err = errClosedEarly
		}
		_ = tc.Close()
		return nil, nil, false
	}
	ch, err := chello.Parse(msg)
	if err != nil {
		st.err = fmt.Errorf("malformed ClientHello: %v", err)
		_ = tc.Close()
		return nil, nil, false
	}
	st.fingerprintHello(ch)
	_ = tc.Conn.SetReadDeadline(time.Time{})
	return ch, consumed, true
}

// h2Sniff hands net/http a TLS connection unchanged (it implements ConnectionState and
// HandshakeContext through the embedded *tls.Conn, which is all net/http needs to serve
// HTTP/2 on it) while keeping the first plaintext bytes the client sends: the HTTP/2
// preface, SETTINGS and WINDOW_UPDATE, the client's HTTP/2 fingerprint.
type h2Sniff struct {
	*tls.Conn
	st   *connState
	mu   sync.Mutex
	buf  []byte
	done bool
}

const h2SniffCap = 512

func (c *h2Sniff) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.mu.Lock()
		if !c.done {
			c.buf = append(c.buf, p[:min(n, h2SniffCap-len(c.buf))]...)
			if fp, ok := frontlog.H2Settings(c.buf); ok && (len(c.buf) >= h2SniffCap || hasWindowUpdate(fp)) {
				c.st.h2.Store(&fp)
				c.done, c.buf = true, nil
			} else if ok {
				c.st.h2.Store(&fp) // SETTINGS complete; a WINDOW_UPDATE may still follow
			}
			if len(c.buf) >= h2SniffCap {
				c.done, c.buf = true, nil
			}
		}
		c.mu.Unlock()
	}
	return n, err
}

func hasWindowUpdate(fp string) bool { return !strings.HasSuffix(fp, "|0") }
