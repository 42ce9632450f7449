package server

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"cfrbench/ech/internal/chello"
	"cfrbench/ech/internal/frontlog"
)

// Route sends inner server names ending in Suffix to Addr.
type Route struct {
	Suffix string
	Addr   string
}

// ParseRoute parses "SUFFIX=HOST:PORT".
func ParseRoute(s string) (Route, error) {
	suf, addr, ok := strings.Cut(s, "=")
	suf = strings.ToLower(strings.Trim(strings.TrimSpace(suf), "."))
	if !ok || suf == "" || addr == "" {
		return Route{}, fmt.Errorf("invalid --route %q: want SUFFIX=HOST:PORT", s)
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return Route{}, fmt.Errorf("invalid --route %q: %v", s, err)
	}
	return Route{Suffix: suf, Addr: addr}, nil
}

// Front is the split-mode client-facing server: it decrypts ECH itself, forwards the
// reconstructed ClientHelloInner to the origin chosen by the inner server name and then
// relays bytes both ways without terminating TLS. ClientHellos it cannot decrypt go to
// Local, which terminates TLS for the public name and sends retry configs.
type Front struct {
	Keys        *KeyStore
	PublicName  string
	Routes      []Route
	Default     string
	Local       *TLSServer
	Log         *frontlog.Logger
	DialTimeout time.Duration

	wg    sync.WaitGroup
	lmu   sync.Mutex
	lists []net.Listener
}

// Init sorts routes longest suffix first.
func (f *Front) Init() {
	sort.SliceStable(f.Routes, func(i, j int) bool { return len(f.Routes[i].Suffix) > len(f.Routes[j].Suffix) })
	if f.DialTimeout == 0 {
		f.DialTimeout = 5 * time.Second
	}
}

func (f *Front) route(name string) string {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	for _, r := range f.Routes {
		if name == r.Suffix || strings.HasSuffix(name, "."+r.Suffix) {
			return r.Addr
		}
	}
	return f.Default
}

// Serve accepts on l until closed.
func (f *Front) Serve(l net.Listener) error {
	f.lmu.Lock()
	f.lists = append(f.lists, l)
	f.lmu.Unlock()
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			time.Sleep(5 * time.Millisecond)
			continue
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			f.handle(c)
		}()
	}
}

// Shutdown stops accepting and waits briefly for relays to end.
func (f *Front) Shutdown() {
	f.lmu.Lock()
	for _, l := range f.lists {
		_ = l.Close()
	}
	f.lmu.Unlock()
	done := make(chan struct{})
	go func() { f.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
	}
	f.Local.Shutdown()
}

// TLS alert records sent when the front itself must refuse (plaintext, fatal).
var (
	alertUnrecognizedName = []byte{21, 3, 3, 0, 2, 2, 112}
	alertInternalError    = []byte{21, 3, 3, 0, 2, 2, 80}
)

func (f *Front) handle(raw net.Conn) {
	st := newConnState(raw, "split", f.Log)
	tc := &trackedConn{Conn: raw, st: st}
	defer func() {
		if r := recover(); r != nil {
			st.err = fmt.Errorf("internal error: %v", r)
			_ = tc.Close()
		}
	}()
	ch, consumed, ok := readClientHello(tc, st, f.Local.HandshakeTimeout)
	if !ok {
		return
	}
	if ch.HasECH {
		if t, _, perr := chello.ParseECH(ch.ECH); perr == nil && t == chello.ECHTypeOuter {
			d, derr := chello.Decrypt(ch, f.Keys.decryptKeys())
			if derr == nil {
				f.forward(tc, st, ch, d, consumed)
				return
			}
		}
		// Undecryptable (stale config, GREASE, garbage): the public-name server answers and
		// sends retry configs.
		f.Local.ServeConn(&prefixConn{trackedConn: tc, prefix: consumed}, st)
		return
	}
	name := strings.ToLower(ch.ServerName)
	if name == "" || name == f.PublicName || f.route(name) == "" {
		f.Local.ServeConn(&prefixConn{trackedConn: tc, prefix: consumed}, st)
		return
	}
	f.forward(tc, st, ch, nil, consumed)
}

// forward relays one connection to its origin. With d set (ECH accepted) the origin gets
// ClientHelloInner; without, the original bytes (a plain SNI pass-through).
func (f *Front) forward(tc *trackedConn, st *connState, outer *chello.ClientHello, d *chello.Decrypted, consumed []byte) {
	st.capturing = false
	st.head = nil
	st.ticketsHidden = true // NewSessionTicket is encrypted end to end with the origin
	st.outerSNI = outer.ServerName
	hello := outer
	if d != nil {
		hello = d.Inner
		st.echState = "accepted"
		st.innerSNI = d.Inner.ServerName
	}
	st.clientRandom = append([]byte(nil), hello.Random...)
	st.resumed = hello.HasPSK
	if hello.HasPSK {
		st.pskHash = frontlog.PSKHash(hello.PSKIdentity)
	}
	addr := f.route(hello.ServerName)
	st.route = addr
	if addr == "" {
		st.err = fmt.Errorf("no route for server name %q", hello.ServerName)
		_, _ = tc.Write(alertUnrecognizedName)
		_ = tc.Close()
		return
	}
	up, err := net.DialTimeout("tcp", addr, f.DialTimeout)
	if err != nil {
		st.err = fmt.Errorf("origin %s: %v", addr, err)
		_, _ = tc.Write(alertInternalError)
		_ = tc.Close()
		return
	}
	defer up.Close()
	first := consumed
	if d != nil {
		recVersion := uint16(consumed[1])<<8 | uint16(consumed[2])
		first = chello.Records(d.Inner.Raw, recVersion)
	}
	if _, err := up.Write(first); err != nil {
		st.err = fmt.Errorf("origin %s: %v", addr, err)
		_ = tc.Close()
		return
	}
	raw := tc.Conn
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // origin -> client
		defer wg.Done()
		n, _ := io.Copy(raw, up)
		st.bytesOut.Add(n)
		closeWrite(raw)
		_ = raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	}()
	// client -> origin: watch records until the client's first application_data record (its
	// Finished), which ends the handshake; decrypt a second ClientHello after HRR.
	if err := f.relayHandshake(tc, up, st, d); err != nil && st.err == nil {
		st.err = err
	}
	if st.err == nil {
		n, _ := io.Copy(up, raw)
		st.bytesIn.Add(n)
	}
	closeWrite(up)
	wg.Wait()
	_ = tc.Close()
}

func closeWrite(c net.Conn) {
	if t, ok := c.(*net.TCPConn); ok {
		_ = t.CloseWrite()
		return
	}
	_ = c.Close()
}

func (f *Front) relayHandshake(tc *trackedConn, up net.Conn, st *connState, d *chello.Decrypted) error {
	var hdr [5]byte
	for {
		if _, err := io.ReadFull(tc, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return errors.New("client closed before finishing the handshake")
			}
			return fmt.Errorf("client: %v", err)
		}
		n := int(hdr[3])<<8 | int(hdr[4])
		if n > chello.MaxRecordPayload {
			return fmt.Errorf("client sent oversized record (%d bytes)", n)
		}
		if hdr[0] == chello.RecordHandshake && d != nil {
			// The only plaintext handshake message a TLS 1.3 client sends after its first
			// ClientHello is the second ClientHello that answers a HelloRetryRequest.
			msg, _, err := chello.ReadHandshakeMessage(io.MultiReader(bytesReader(hdr[:]), tc), nil)
			if err != nil {
				return fmt.Errorf("second ClientHello: %v", err)
			}
			ch2, err := chello.Parse(msg)
			if err != nil {
				return fmt.Errorf("second ClientHello: %v", err)
			}
			inner2, err := chello.DecryptSecond(ch2, d)
			if err != nil {
				return err
			}
			if _, err := up.Write(chello.Records(inner2.Raw, uint16(hdr[1])<<8|uint16(hdr[2]))); err != nil {
				return fmt.Errorf("origin: %v", err)
			}
			continue
		}
		buf := make([]byte, 5+n)
		copy(buf, hdr[:])
		if _, err := io.ReadFull(tc, buf[5:]); err != nil {
			return fmt.Errorf("client: %v", err)
		}
		if _, err := up.Write(buf); err != nil {
			return fmt.Errorf("origin: %v", err)
		}
		if hdr[0] == chello.RecordAppData {
			st.hsDone = time.Now()
			return nil
		}
		if hdr[0] == chello.RecordAlert {
			return errors.New("client sent an alert during the handshake")
		}
	}
}

type byteReader struct{ b []byte }

func (r *byteReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

func bytesReader(b []byte) io.Reader { return &byteReader{b: append([]byte(nil), b...)} }
