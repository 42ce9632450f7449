package loadgen

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"syscall"
)

// Profile is one device type: how its network stack and its TLS client differ from the
// generator's defaults, so that a population of devices offers the front door the
// fingerprints real devices do. A workload line selects one with "profile": NAME.
//
// What the front door can see, and how a profile sets it:
//
//   - TTL / hop limit (IP_TTL, IPV6_UNICAST_HOPS), MSS (TCP_MAXSEG before connect) and the
//     receive buffer (SO_RCVBUF before connect, which sets the SYN's window and window
//     scale): per socket, no namespace needed.
//   - TCP timestamps, SACK, window scaling on/off and the timestamp offset policy are
//     per-namespace sysctls: give the profile a Netns (a file such as /run/netns/NAME) and
//     its connections are made from that namespace (testbed/devices.py creates them).
//   - HTTP/2: the SETTINGS and connection WINDOW_UPDATE the client sends (h2_* fields,
//     net/http's HTTP2Config): header table size, max frame size, stream and connection
//     windows. Go always sends ENABLE_PUSH=0 first and its own SETTINGS order.
//   - ClientHello: crypto/tls lets a client choose MinVersion/MaxVersion (TLS 1.2 allowed
//     adds the TLS 1.2 cipher suites and a second supported_versions entry; but with ECH
//     crypto/tls refuses MinVersion below 1.3, so min_tls and cipher_suites only matter
//     with --no-ech), the TLS 1.2 CipherSuites offered (not their order: crypto/tls orders them itself; TLS 1.3 suites
//     are not configurable), CurvePreferences (the set of supported_groups and key shares,
//     not their order, which crypto/tls fixes), NextProtos (ALPN), and whether it asks for
//     session tickets (no_tickets: SessionTicketsDisabled and no cache, which drops the
//     session_ticket extension and never resumes). It does not let a client choose the extension order, signature algorithms, GREASE, padding, record
//     size limit or the ECH outer extensions: those are one fixed Go fingerprint, so JA4
//     varies only through the cipher list, the extension set and ALPN.
type Profile struct {
	Name         string   `json:"-"`
	TTL          int      `json:"ttl,omitempty"`
	HopLimit     int      `json:"hop_limit,omitempty"`
	MSS          int      `json:"mss,omitempty"`
	RcvBuf       int      `json:"rcvbuf,omitempty"`
	Netns        string   `json:"netns,omitempty"`
	MinTLS       string   `json:"min_tls,omitempty"` // "1.2" or "1.3" (default)
	CipherSuites []string `json:"cipher_suites,omitempty"`
	Curves       []string `json:"curves,omitempty"`
	ALPN         []string `json:"alpn,omitempty"`
	NoTickets    bool     `json:"no_tickets,omitempty"`
	// HTTP/2 client settings (0: Go's default), what the server sees in the client's
	// SETTINGS and first WINDOW_UPDATE: HEADER_TABLE_SIZE, MAX_FRAME_SIZE,
	// INITIAL_WINDOW_SIZE and the connection window.
	H2HeaderTable  int `json:"h2_header_table,omitempty"`
	H2FrameSize    int `json:"h2_frame_size,omitempty"`
	H2StreamWindow int `json:"h2_stream_window,omitempty"`
	H2ConnWindow   int `json:"h2_conn_window,omitempty"`
}

// h2Config is the profile's HTTP/2 client configuration, nil when it keeps Go's.
func (p *Profile) h2Config() *http.HTTP2Config {
	if p == nil || p.H2HeaderTable == 0 && p.H2FrameSize == 0 && p.H2StreamWindow == 0 && p.H2ConnWindow == 0 {
		return nil
	}
	return &http.HTTP2Config{MaxDecoderHeaderTableSize: p.H2HeaderTable, MaxReadFrameSize: p.H2FrameSize,
		MaxReceiveBufferPerStream: p.H2StreamWindow, MaxReceiveBufferPerConnection: p.H2ConnWindow}
}

// ParseProfiles reads a JSON object {"name": {profile}, ...}; unknown fields are an error
// (a misspelt knob must not silently leave every device identical).
func ParseProfiles(r io.Reader, name string) (map[string]*Profile, error) {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	var m map[string]*Profile
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%s: %v", name, err)
	}
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		p := m[k]
		if p == nil {
			return nil, fmt.Errorf("%s: profile %q is null", name, k)
		}
		p.Name = k
		if err := p.validate(); err != nil {
			return nil, fmt.Errorf("%s: profile %q: %v", name, k, err)
		}
	}
	return m, nil
}

func (p *Profile) validate() error {
	if p.TTL < 0 || p.TTL > 255 || p.HopLimit < 0 || p.HopLimit > 255 {
		return fmt.Errorf("ttl and hop_limit must be 1..255")
	}
	if p.MSS != 0 && (p.MSS < 88 || p.MSS > 65535) {
		return fmt.Errorf("mss must be 88..65535")
	}
	if p.RcvBuf < 0 {
		return fmt.Errorf("rcvbuf must be >= 0")
	}
	if p.H2HeaderTable < 0 || p.H2StreamWindow < 0 || p.H2ConnWindow < 0 ||
		p.H2FrameSize != 0 && (p.H2FrameSize < 16384 || p.H2FrameSize > 16777215) {
		return fmt.Errorf("h2 sizes must be >= 0 and h2_frame_size 16384..16777215")
	}
	if p.MinTLS != "" && p.MinTLS != "1.2" && p.MinTLS != "1.3" {
		return fmt.Errorf("min_tls must be 1.2 or 1.3")
	}
	if _, err := p.suites(); err != nil {
		return err
	}
	if _, err := p.curves(); err != nil {
		return err
	}
	return nil
}

func (p *Profile) suites() ([]uint16, error) {
	if len(p.CipherSuites) == 0 {
		return nil, nil
	}
	byName := map[string]uint16{}
	for _, s := range tls.CipherSuites() {
		byName[s.Name] = s.ID
	}
	var out []uint16
	for _, n := range p.CipherSuites {
		id, ok := byName[n]
		if !ok {
			return nil, fmt.Errorf("unknown or insecure cipher suite %q (names as crypto/tls.CipherSuites gives them)", n)
		}
		out = append(out, id)
	}
	return out, nil
}

var curveNames = map[string]tls.CurveID{"P256": tls.CurveP256, "P384": tls.CurveP384, "P521": tls.CurveP521,
	"X25519": tls.X25519, "X25519MLKEM768": tls.X25519MLKEM768}

func (p *Profile) curves() ([]tls.CurveID, error) {
	var out []tls.CurveID
	for _, n := range p.Curves {
		id, ok := curveNames[strings.TrimSpace(n)]
		if !ok {
			return nil, fmt.Errorf("unknown curve %q", n)
		}
		out = append(out, id)
	}
	return out, nil
}

// apply sets the profile's TLS choices on a device's config (a clone of the base).
func (p *Profile) apply(cfg *tls.Config) {
	if p == nil {
		return
	}
	if p.MinTLS == "1.2" {
		cfg.MinVersion = tls.VersionTLS12
	}
	if s, _ := p.suites(); len(s) > 0 {
		cfg.CipherSuites = s
	}
	if c, _ := p.curves(); len(c) > 0 {
		cfg.CurvePreferences = c
	}
	if len(p.ALPN) > 0 {
		cfg.NextProtos = append([]string(nil), p.ALPN...)
	}
	cfg.SessionTicketsDisabled = p.NoTickets
}

// control sets the per-socket stack options before connect (net.Dialer.Control).
func (p *Profile) control(network, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		set := func(level, opt, v int) {
			if v > 0 && serr == nil {
				if e := syscall.SetsockoptInt(int(fd), level, opt, v); e != nil {
					serr = fmt.Errorf("profile %s: setsockopt(%d, %d, %d): %v", p.Name, level, opt, v, e)
				}
			}
		}
		if strings.HasSuffix(network, "6") {
			set(syscall.IPPROTO_IPV6, syscall.IPV6_UNICAST_HOPS, p.HopLimit)
		} else {
			set(syscall.IPPROTO_IP, syscall.IP_TTL, p.TTL)
		}
		set(syscall.IPPROTO_TCP, syscall.TCP_MAXSEG, p.MSS)
		set(syscall.SOL_SOCKET, syscall.SO_RCVBUF, p.RcvBuf)
	})
	if err != nil {
		return err
	}
	return serr
}
