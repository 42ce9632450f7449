// Package frontlog writes the front door's per-connection log: one JSON object per line,
// written with a single write call per line so a reader (or a crash) never sees a torn or
// buffered record. This is the privileged observer's view that linkability analysis joins
// with the clients' ground truth (by client_random).
package frontlog

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"
)

// Record is one connection as the front door saw it. Pointer fields are JSON null when
// unknown or not applicable.
type Record struct {
	TS        float64 `json:"ts"`
	ConnID    uint64  `json:"conn_id"`
	PeerAddr  string  `json:"peer_addr"`
	PeerPort  int     `json:"peer_port"`
	LocalAddr string  `json:"local_addr"`
	LocalPort int     `json:"local_port"`
	OuterSNI  *string `json:"outer_sni"`
	InnerSNI  *string `json:"inner_sni"`
	ECH       string  `json:"ech"`
	Resumed   bool    `json:"resumed"`
	PSKIDHash *string `json:"psk_id_hash"`
	// IssuedTicketHashes are TicketHash of every session ticket the server sent on this
	// connection: a later connection whose psk_id_hash is in this list resumed a ticket
	// issued here. Empty when none was sent (resumption off, handshake failed); nil (JSON
	// null) where the tickets are not visible (split front relaying to an origin: they
	// travel encrypted inside TLS 1.3; the origin's log has them).
	IssuedTicketHashes []string `json:"issued_ticket_hashes"`
	ClientRandom       *string  `json:"client_random"`
	ALPN               *string  `json:"alpn"`
	BytesIn            int64    `json:"bytes_in"`
	BytesOut           int64    `json:"bytes_out"`
	HandshakeMS        *float64 `json:"handshake_ms"`
	DurationMS         float64  `json:"duration_ms"`
	Mode               string   `json:"mode"`
	Route              *string  `json:"route,omitempty"`
	Error              *string  `json:"error"`
	// Fingerprints: what the front door learns about the client's stack besides its
	// address. SYN: the client's SYN (TCP_SAVED_SYN); null if not saved (listener without
	// TCP_SAVE_SYN, or not a TCP connection). RTTUS: kernel smoothed RTT right after
	// accept, i.e. the handshake round trip (microseconds; null if unknown). JA4 and
	// TLSGroups: of the ClientHello received from the network (ClientHelloOuter under
	// ECH); null if none was parsed. H2Settings: the client's HTTP/2 SETTINGS and
	// WINDOW_UPDATE (H2Settings format); null when the connection did not speak HTTP/2 or
	// the front door cannot see it (split front: encrypted end to end to the origin).
	SYN        *SYN    `json:"syn"`
	RTTUS      *uint32 `json:"rtt_us"`
	JA4        *string `json:"ja4"`
	TLSGroups  *string `json:"tls_groups"`
	H2Settings *string `json:"h2_settings"`
	// Requests and Hosts: the HTTP requests the connection carried, in total and per host
	// (the request's :authority or Host), hosts in the order of their first request. A
	// browser reuses an open connection for later requests to the same origin and
	// coalesces other hostnames onto it when they resolve to the same address and the
	// certificate covers them (RFC 9113 sec. 9.1.1), so one connection can hold visits to
	// several sites, which the front door then knows came from one client. Null where the
	// front door does not see the requests (split front: they travel end to end to the
	// origin) or a server does not record them (RequestTally).
	Requests *int           `json:"requests"`
	Hosts    []HostRequests `json:"hosts"`
}

// HostRequests is one host's share of a connection's requests: how many, and when the first
// one arrived (milliseconds after the connection was accepted).
type HostRequests struct {
	Host     string  `json:"host"`
	Requests int     `json:"requests"`
	FirstMS  float64 `json:"first_ms"`
}

// RequestTally counts one connection's requests per host for Record.Requests and
// Record.Hosts. Safe for concurrent use: HTTP/2 streams of one connection are served in
// parallel. The zero value is ready; Start sets the time FirstMS is measured from.
type RequestTally struct {
	mu    sync.Mutex
	start time.Time
	n     int
	hosts []HostRequests
}

// Start sets the connection's accept time (FirstMS origin).
func (t *RequestTally) Start(at time.Time) {
	t.mu.Lock()
	t.start = at
	t.mu.Unlock()
}

// Note records one request for host (port and a trailing dot removed, lower-cased) at time at.
func (t *RequestTally) Note(host string, at time.Time) {
	host = normHost(host)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n++
	for i := range t.hosts {
		if t.hosts[i].Host == host {
			t.hosts[i].Requests++
			return
		}
	}
	first := 0.0
	if !t.start.IsZero() {
		first = float64(at.Sub(t.start).Microseconds()) / 1000
	}
	t.hosts = append(t.hosts, HostRequests{Host: host, Requests: 1, FirstMS: first})
}

// Fill sets r.Requests and r.Hosts (left null when no request was noted: a connection that
// carried none, e.g. a failed handshake, says nothing about hosts).
func (t *RequestTally) Fill(r *Record) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n == 0 {
		return
	}
	n := t.n
	r.Requests = &n
	r.Hosts = append([]HostRequests(nil), t.hosts...)
}

func normHost(h string) string {
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	return strings.ToLower(strings.TrimSuffix(h, "."))
}

// Logger serializes records to a file (or discards them).
type Logger struct {
	mu sync.Mutex
	w  io.Writer
	f  *os.File
}

// Open opens path for appending ("" discards, "-" is stdout).
func Open(path string) (*Logger, error) {
	switch path {
	case "":
		return &Logger{w: io.Discard}, nil
	case "-":
		return &Logger{w: os.Stdout}, nil
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	return &Logger{w: f, f: f}, nil
}

// Write emits one record as one line.
func (l *Logger) Write(r *Record) {
	b, err := json.Marshal(r)
	if err != nil {
		return
	}
	b = append(b, '\n')
	l.mu.Lock()
	_, _ = l.w.Write(b)
	l.mu.Unlock()
}

// Close closes the underlying file.
func (l *Logger) Close() error {
	if l.f != nil {
		return l.f.Close()
	}
	return nil
}

// Str returns a pointer for optional string fields ("" gives nil).
func Str(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// Hex returns a pointer to the hex form of b (nil for empty).
func Hex(b []byte) *string {
	if len(b) == 0 {
		return nil
	}
	s := hex.EncodeToString(b)
	return &s
}

// PSKHash is the stable identifier of a presented PSK identity: the first 16 hex digits of
// SHA-256 of the identity (the session ticket). An adversary at the front door can compute
// exactly this to link resumed sessions.
func PSKHash(identity []byte) *string {
	if len(identity) == 0 {
		return nil
	}
	s := TicketHash(identity)
	return &s
}

// TicketHash is the hash behind psk_id_hash and issued_ticket_hashes: the first 16 hex
// digits of SHA-256 of the ticket exactly as it travels (the NewSessionTicket ticket field,
// which the client later presents unchanged as its PSK identity).
func TicketHash(ticket []byte) string {
	h := sha256.Sum256(ticket)
	return hex.EncodeToString(h[:8])
}

// SplitAddr gives the textual IP (IPv4-mapped addresses shown as IPv4) and port.
func SplitAddr(a net.Addr) (string, int) {
	if t, ok := a.(*net.TCPAddr); ok {
		ip := t.IP
		if v4 := ip.To4(); v4 != nil {
			ip = v4
		}
		return ip.String(), t.Port
	}
	if a == nil {
		return "", 0
	}
	host, _, _ := net.SplitHostPort(a.String())
	return host, 0
}
