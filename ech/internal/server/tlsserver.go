package server

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"time"

	"cfrbench/ech/internal/chello"
	"cfrbench/ech/internal/frontlog"
	"cfrbench/ech/internal/testca"
)

// TLSServer terminates TLS 1.3 (with ECH when Keys is set) and serves HTTP/1.1 and HTTP/2.
// It is the shared-mode front door, the origin backend, and the split-mode front's
// public-name fallback.
type TLSServer struct {
	Mode             string // "shared", "split" (front fallback) or "origin"
	CA               *testca.CA
	Sites            *Sites
	PublicName       string
	Keys             *KeyStore // nil: no ECH keys (origin)
	Resumption       bool
	Log              *frontlog.Logger
	Curves           []tls.CurveID
	HandshakeTimeout time.Duration
	// SelfDecrypt makes the shared-mode front door decrypt ECH itself (crypto/hpke, key
	// parsed once) and hand crypto/tls the reconstructed ClientHelloInner, exactly what a
	// split-mode origin receives; crypto/tls then only computes the acceptance
	// confirmation. crypto/tls's own ECH path re-parses the X25519 private key, which
	// derives its public key, on every connection: one extra scalar multiplication per
	// handshake. Undecryptable hellos still go to crypto/tls, which sends retry configs.
	SelfDecrypt bool
	IdleTimeout time.Duration
	// CertGroup > 1: numbered sites share certificates, CertGroup names each (site-0001 ..
	// site-000N on one, and so on), as a CDN's shared certificates list many customers'
	// names. A browser may then coalesce visits to those sites onto one HTTP/2 connection
	// (RFC 9113 sec. 9.1.1). 0 or 1: one certificate per name.
	CertGroup int

	base  *tls.Config
	tmpl  *tls.Config
	hl    *chanListener
	hs    *http.Server
	wg    sync.WaitGroup
	lmu   sync.Mutex
	lists []net.Listener
}

// Init builds the TLS configs and the HTTP server.
func (s *TLSServer) Init() error {
	if s.HandshakeTimeout == 0 {
		s.HandshakeTimeout = 10 * time.Second
	}
	if s.IdleTimeout == 0 {
		s.IdleTimeout = 30 * time.Second
	}
	s.tmpl = &tls.Config{
		MinVersion:                  tls.VersionTLS13,
		NextProtos:                  []string{"h2", "http/1.1"},
		GetCertificate:              s.getCertificate,
		GetEncryptedClientHelloKeys: s.getECHKeys,
		SessionTicketsDisabled:      !s.Resumption,
		CurvePreferences:            s.Curves,
	}
	if s.Resumption {
		// Explicit ticket keys: every per-connection clone shares them, so tickets issued on
		// one connection resume on any other.
		var k [32]byte
		if _, err := rand.Read(k[:]); err != nil {
			return err
		}
		s.tmpl.SetSessionTicketKeys([][32]byte{k})
	}
	s.base = s.tmpl.Clone()
	s.base.GetConfigForClient = s.configForClient
	s.hl = newChanListener(&net.TCPAddr{})
	s.hs = &http.Server{
		Handler:           noteRequests(Handler(s.Mode)),
		ConnContext:       withConnState,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       s.IdleTimeout,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	go func() { _ = s.hs.Serve(s.hl) }()
	return nil
}

func (s *TLSServer) getCertificate(chi *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := chi.ServerName
	if name == "" {
		name = s.PublicName
	}
	if name == "" || (name != s.PublicName && !s.Sites.Has(name)) {
		if st := stateOf(chi.Conn); st != nil {
			st.err = fmt.Errorf("%w %q", errUnknownSite, name)
		}
		return nil, fmt.Errorf("%w %q", errUnknownSite, name)
	}
	if group := s.certGroup(name); group != nil {
		return s.CA.CertificateFor(group)
	}
	return s.CA.Certificate(name)
}

// getECHKeys is called by crypto/tls only when the ClientHello carries an ECH extension;
// its first call sees ClientHelloOuter, which is how the log learns the outer SNI.
func (s *TLSServer) getECHKeys(chi *tls.ClientHelloInfo) ([]tls.EncryptedClientHelloKey, error) {
	st := stateOf(chi.Conn)
	if st != nil && st.pre {
		return []tls.EncryptedClientHelloKey{}, nil // ClientHelloInner: nothing to decrypt
	}
	if st != nil && !st.echOffered {
		st.echOffered = true
		st.outerSNI = chi.ServerName
	}
	if s.Keys == nil {
		return []tls.EncryptedClientHelloKey{}, nil
	}
	id, known := uint8(0), false
	if st != nil {
		if ch, ok := chello.OuterInfo(st.head); ok && ch.HasECH {
			if t, o, err := chello.ParseECH(ch.ECH); err == nil && t == chello.ECHTypeOuter {
				id, known = o.ConfigID, true
			}
		}
	}
	return s.Keys.forConfigID(id, known), nil
}

// configForClient returns a per-connection clone whose callbacks record into exactly this
// connection's state: KeyLogWriter and UnwrapSession capture the client random and the
// presented PSK identity (when crypto/tls, not echd, parsed the hello that ran), and
// WrapSession the hash of every session ticket issued. A clone per connection is the
// reliable way to attribute a ticket: WrapSession only receives a ConnectionState, which
// does not identify the connection.
func (s *TLSServer) configForClient(chi *tls.ClientHelloInfo) (*tls.Config, error) {
	st := stateOf(chi.Conn)
	if st == nil {
		return nil, nil
	}
	st.sni = chi.ServerName
	// With SelfDecrypt or without ECH keys, random and PSK identity come from the hello
	// the front door parsed itself.
	keyLog := !s.SelfDecrypt && s.Keys != nil
	if !keyLog && !s.Resumption {
		return nil, nil
	}
	c := s.tmpl.Clone()
	if keyLog {
		c.KeyLogWriter = st
		if s.Resumption {
			c.UnwrapSession = func(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
				ss, err := s.tmpl.DecryptTicket(identity, cs)
				if ss != nil {
					st.pskCandidate = frontlog.PSKHash(identity)
				}
				return ss, err
			}
		}
	}
	if s.Resumption {
		// Exactly what crypto/tls does without WrapSession (EncryptTicket with the shared
		// ticket keys); the result is the ticket the client will present as its identity.
		c.WrapSession = func(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
			ticket, err := s.tmpl.EncryptTicket(cs, ss)
			if err == nil {
				st.issued = append(st.issued, frontlog.TicketHash(ticket))
			}
			return ticket, err
		}
	}
	return c, nil
}

// Serve accepts on l until it is closed.
func (s *TLSServer) Serve(l net.Listener) error {
	s.lmu.Lock()
	s.lists = append(s.lists, l)
	s.lmu.Unlock()
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			time.Sleep(5 * time.Millisecond) // EMFILE and friends: back off, keep serving
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			st := newConnState(c, s.Mode, s.Log)
			tc := &trackedConn{Conn: c, st: st}
			if s.SelfDecrypt && s.Keys != nil {
				s.serveSelfDecrypt(tc, st)
				return
			}
			s.ServeConn(tc, st)
		}()
	}
}

// serveSelfDecrypt reads the ClientHello, decrypts ECH itself and lets crypto/tls
// terminate ClientHelloInner; anything else is replayed to crypto/tls unchanged.
func (s *TLSServer) serveSelfDecrypt(tc *trackedConn, st *connState) {
	defer func() {
		if r := recover(); r != nil {
			st.err = fmt.Errorf("internal error: %v", r)
			_ = tc.Close()
		}
	}()
	ch, consumed, ok := readClientHello(tc, st, s.HandshakeTimeout)
	if !ok {
		return
	}
	if ch.HasECH {
		if t, _, perr := chello.ParseECH(ch.ECH); perr == nil && t == chello.ECHTypeOuter {
			if d, derr := chello.Decrypt(ch, s.Keys.decryptKeys()); derr == nil {
				st.pre = true
				st.echOffered = true
				st.echState = "accepted"
				st.outerSNI, st.innerSNI = ch.ServerName, d.Inner.ServerName
				st.clientRandom = d.Inner.Random
				if d.Inner.HasPSK {
					st.pskCandidate = frontlog.PSKHash(d.Inner.PSKIdentity)
				}
				ver := uint16(consumed[1])<<8 | uint16(consumed[2])
				s.ServeConn(&innerConn{trackedConn: tc, pending: chello.Records(d.Inner.Raw, ver), d: d}, st)
				return
			}
		}
	}
	s.ServeConn(&prefixConn{trackedConn: tc, prefix: consumed}, st)
}

// ServeConn runs the handshake on c (a *trackedConn or *prefixConn), logs, then hands the
// connection to the HTTP server.
func (s *TLSServer) ServeConn(c net.Conn, st *connState) {
	defer func() {
		if r := recover(); r != nil {
			st.err = fmt.Errorf("internal error: %v", r)
			_ = c.Close()
		}
	}()
	tc := tls.Server(c, s.base)
	ctx, cancel := context.WithTimeout(context.Background(), s.HandshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	st.hsDone = time.Now()
	st.capturing = false
	cs := tc.ConnectionState()
	outer, haveOuter := chello.OuterInfo(st.head)
	if haveOuter && !st.pre {
		st.fingerprintHello(outer)
	}
	if st.pre {
		// ECH was decrypted by serveSelfDecrypt: state already filled in.
	} else if haveOuter && outer.HasECH {
		st.echOffered = true
		if st.outerSNI == "" {
			st.outerSNI = outer.ServerName
		}
	}
	switch {
	case st.pre:
	case cs.ECHAccepted:
		st.echState = "accepted"
		st.innerSNI = cs.ServerName
		if st.innerSNI == "" {
			st.innerSNI = st.sni
		}
	case haveOuter && outer.HasECH && s.Mode == "origin":
		if t, _, _ := chello.ParseECH(outer.ECH); t == chello.ECHTypeInner {
			// A split-mode front forwarded ClientHelloInner: the name is the inner one.
			st.echState = "inner"
			st.innerSNI, st.outerSNI = outer.ServerName, ""
		} else {
			st.echState = "rejected"
			st.outerSNI = outer.ServerName
		}
	case st.echOffered:
		st.echState = "rejected"
	default:
		st.echState = "none"
		if haveOuter {
			st.outerSNI = outer.ServerName
		} else {
			st.outerSNI = cs.ServerName
		}
	}
	if st.clientRandom == nil && haveOuter {
		st.clientRandom = append([]byte(nil), outer.Random...)
	}
	if err != nil {
		if st.err == nil {
			st.err = err
			if st.bytesIn.Load() == 0 && errors.Is(err, io.EOF) {
				st.err = errClosedEarly
			}
		}
		_ = tc.Close()
		return
	}
	st.resumed = cs.DidResume
	if cs.DidResume {
		st.pskHash = st.pskCandidate
		if st.pskHash == nil && !cs.ECHAccepted && haveOuter && outer.HasPSK {
			// The handshake that ran used the hello we parsed: its first identity.
			st.pskHash = frontlog.PSKHash(outer.PSKIdentity)
		}
	}
	st.alpn = cs.NegotiatedProtocol
	st.head = nil
	if st.alpn == "h2" {
		s.hl.deliver(&h2Sniff{Conn: tc, st: st})
		return
	}
	s.hl.deliver(tc)
}

// Shutdown stops accepting, closes every connection (each is logged) and waits.
func (s *TLSServer) Shutdown() {
	s.lmu.Lock()
	for _, l := range s.lists {
		_ = l.Close()
	}
	s.lmu.Unlock()
	_ = s.hl.Close()
	_ = s.hs.Close()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
	}
}
