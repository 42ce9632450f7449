// Package dnshttps is a minimal DNS stub client for what an ECH client needs: HTTPS
// resource records (type 65, RFC 9460) with their SvcParams (alpn, ech, ipv4hint,
// ipv6hint) and A/AAAA records. Go's standard resolver cannot ask for HTTPS records, and
// no module downloads are possible here, so this is written against RFC 1035 directly:
// UDP with EDNS(0), TCP retry when truncated, name compression, CNAME chains.
package dnshttps

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"
)

// Record types and SvcParamKeys used here.
const (
	TypeA     uint16 = 1
	TypeCNAME uint16 = 5
	TypeAAAA  uint16 = 28
	TypeOPT   uint16 = 41
	TypeHTTPS uint16 = 65

	KeyMandatory = 0
	KeyALPN      = 1
	KeyNoDefALPN = 2
	KeyPort      = 3
	KeyIPv4Hint  = 4
	KeyECH       = 5
	KeyIPv6Hint  = 6
)

// ErrNXDomain means the name does not exist.
var ErrNXDomain = errors.New("no such name (NXDOMAIN)")

// HTTPS is one HTTPS resource record.
type HTTPS struct {
	Priority uint16
	Target   string
	ALPN     []string
	NoDefALP bool
	Port     uint16
	ECH      []byte
	IPv4Hint []netip.Addr
	IPv6Hint []netip.Addr
	Params   map[uint16][]byte
}

// Answer is the result of one query.
type Answer struct {
	HTTPS []HTTPS
	Addrs []netip.Addr
	TTL   uint32
}

// Client queries one server.
type Client struct {
	Server  string // host:port
	Timeout time.Duration
	Retries int
}

// Query asks for (name, qtype) and follows CNAMEs in the answer section.
func (c *Client) Query(name string, qtype uint16) (*Answer, error) {
	timeout := c.Timeout
	if timeout == 0 {
		timeout = 2 * time.Second
	}
	q, id, err := buildQuery(name, qtype)
	if err != nil {
		return nil, err
	}
	var resp []byte
	var lastErr error
	for attempt := 0; attempt <= max(c.Retries, 1); attempt++ {
		resp, lastErr = exchangeUDP(c.Server, q, timeout)
		if lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		return nil, lastErr
	}
	if len(resp) >= 3 && resp[2]&0x02 != 0 { // TC: retry over TCP
		if resp, err = exchangeTCP(c.Server, q, timeout); err != nil {
			return nil, err
		}
	}
	return parseResponse(resp, id, name, qtype)
}

func buildQuery(name string, qtype uint16) ([]byte, uint16, error) {
	var idb [2]byte
	_, _ = rand.Read(idb[:])
	id := binary.BigEndian.Uint16(idb[:])
	b := make([]byte, 12, 64+len(name))
	binary.BigEndian.PutUint16(b[0:], id)
	b[2] = 0x01 // RD
	binary.BigEndian.PutUint16(b[4:], 1)
	binary.BigEndian.PutUint16(b[10:], 1) // ARCOUNT: OPT
	var err error
	if b, err = appendName(b, name); err != nil {
		return nil, 0, err
	}
	b = binary.BigEndian.AppendUint16(b, qtype)
	b = binary.BigEndian.AppendUint16(b, 1) // IN
	// OPT pseudo-RR: root name, type 41, UDP payload 1232, no flags, no options.
	b = append(b, 0)
	b = binary.BigEndian.AppendUint16(b, TypeOPT)
	b = binary.BigEndian.AppendUint16(b, 1232)
	b = append(b, 0, 0, 0, 0, 0, 0)
	return b, id, nil
}

func appendName(b []byte, name string) ([]byte, error) {
	name = strings.TrimSuffix(name, ".")
	if name == "" {
		return append(b, 0), nil
	}
	if len(name) > 253 {
		return nil, fmt.Errorf("name too long: %q", name)
	}
	for _, l := range strings.Split(name, ".") {
		if l == "" || len(l) > 63 {
			return nil, fmt.Errorf("invalid name %q", name)
		}
		b = append(b, byte(len(l)))
		b = append(b, l...)
	}
	return append(b, 0), nil
}

func exchangeUDP(server string, q []byte, timeout time.Duration) ([]byte, error) {
	conn, err := net.DialTimeout("udp", server, timeout)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	if _, err := conn.Write(q); err != nil {
		return nil, err
	}
	buf := make([]byte, 4096)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return nil, fmt.Errorf("DNS %s: %v", server, err)
		}
		if n >= 2 && buf[0] == q[0] && buf[1] == q[1] {
			return buf[:n], nil
		}
	}
}

func exchangeTCP(server string, q []byte, timeout time.Duration) ([]byte, error) {
	conn, err := net.DialTimeout("tcp", server, timeout)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	msg := binary.BigEndian.AppendUint16(nil, uint16(len(q)))
	if _, err := conn.Write(append(msg, q...)); err != nil {
		return nil, err
	}
	var l [2]byte
	if _, err := io.ReadFull(conn, l[:]); err != nil {
		return nil, err
	}
	resp := make([]byte, binary.BigEndian.Uint16(l[:]))
	if _, err := io.ReadFull(conn, resp); err != nil {
		return nil, err
	}
	return resp, nil
}

type msgReader struct {
	msg []byte
	off int
}

var errMalformed = errors.New("malformed DNS response")

func (r *msgReader) u16() (uint16, error) {
	if r.off+2 > len(r.msg) {
		return 0, errMalformed
	}
	v := binary.BigEndian.Uint16(r.msg[r.off:])
	r.off += 2
	return v, nil
}

func (r *msgReader) u32() (uint32, error) {
	if r.off+4 > len(r.msg) {
		return 0, errMalformed
	}
	v := binary.BigEndian.Uint32(r.msg[r.off:])
	r.off += 4
	return v, nil
}

// name reads a possibly compressed domain name starting at r.off.
func (r *msgReader) name() (string, error) {
	s, next, err := readName(r.msg, r.off)
	if err != nil {
		return "", err
	}
	r.off = next
	return s, nil
}

func readName(msg []byte, off int) (string, int, error) {
	var labels []string
	next := -1
	for hops := 0; hops < 64; hops++ {
		if off >= len(msg) {
			return "", 0, errMalformed
		}
		l := int(msg[off])
		switch {
		case l == 0:
			if next < 0 {
				next = off + 1
			}
			return strings.Join(labels, "."), next, nil
		case l&0xc0 == 0xc0:
			if off+1 >= len(msg) {
				return "", 0, errMalformed
			}
			if next < 0 {
				next = off + 2
			}
			off = (l&0x3f)<<8 | int(msg[off+1])
		case l&0xc0 != 0:
			return "", 0, errMalformed
		default:
			if off+1+l > len(msg) {
				return "", 0, errMalformed
			}
			labels = append(labels, string(msg[off+1:off+1+l]))
			off += 1 + l
		}
	}
	return "", 0, errMalformed
}

// readNameNoCompress reads an uncompressed name inside RDATA (HTTPS TargetName, RFC 9460).
func readNameNoCompress(b []byte) (string, int, error) {
	var labels []string
	off := 0
	for {
		if off >= len(b) {
			return "", 0, errMalformed
		}
		l := int(b[off])
		if l == 0 {
			return strings.Join(labels, "."), off + 1, nil
		}
		if l > 63 || off+1+l > len(b) {
			return "", 0, errMalformed
		}
		labels = append(labels, string(b[off+1:off+1+l]))
		off += 1 + l
	}
}

func parseResponse(msg []byte, id uint16, qname string, qtype uint16) (*Answer, error) {
	if len(msg) < 12 || binary.BigEndian.Uint16(msg) != id {
		return nil, errMalformed
	}
	if msg[2]&0x80 == 0 {
		return nil, errors.New("DNS reply is not a response")
	}
	switch rcode := msg[3] & 0x0f; rcode {
	case 0:
	case 3:
		return nil, fmt.Errorf("%s: %w", qname, ErrNXDomain)
	default:
		return nil, fmt.Errorf("%s: DNS error rcode %d", qname, rcode)
	}
	qd := binary.BigEndian.Uint16(msg[4:])
	an := binary.BigEndian.Uint16(msg[6:])
	r := &msgReader{msg: msg, off: 12}
	for i := 0; i < int(qd); i++ {
		if _, err := r.name(); err != nil {
			return nil, err
		}
		r.off += 4
	}
	want := strings.ToLower(strings.TrimSuffix(qname, "."))
	ans := &Answer{TTL: ^uint32(0)}
	for i := 0; i < int(an); i++ {
		owner, err := r.name()
		if err != nil {
			return nil, err
		}
		typ, err1 := r.u16()
		_, err2 := r.u16()
		ttl, err3 := r.u32()
		rdlen, err4 := r.u16()
		if err := errors.Join(err1, err2, err3, err4); err != nil {
			return nil, err
		}
		if r.off+int(rdlen) > len(msg) {
			return nil, errMalformed
		}
		rdStart := r.off
		rdata := msg[r.off : r.off+int(rdlen)]
		r.off += int(rdlen)
		if strings.ToLower(owner) != want {
			continue
		}
		switch typ {
		case TypeCNAME:
			target, _, err := readName(msg, rdStart)
			if err != nil {
				return nil, err
			}
			want = strings.ToLower(target)
			continue
		case TypeA:
			if typ == qtype && len(rdata) == 4 {
				ans.Addrs = append(ans.Addrs, netip.AddrFrom4([4]byte(rdata)))
			}
		case TypeAAAA:
			if typ == qtype && len(rdata) == 16 {
				ans.Addrs = append(ans.Addrs, netip.AddrFrom16([16]byte(rdata)))
			}
		case TypeHTTPS:
			if typ != qtype {
				continue
			}
			h, err := ParseHTTPS(rdata)
			if err != nil {
				return nil, err
			}
			ans.HTTPS = append(ans.HTTPS, h)
		default:
			continue
		}
		ans.TTL = min(ans.TTL, ttl)
	}
	if ans.TTL == ^uint32(0) {
		ans.TTL = 0
	}
	return ans, nil
}

// ParseHTTPS parses the RDATA of an HTTPS (or SVCB) record.
func ParseHTTPS(rd []byte) (HTTPS, error) {
	var h HTTPS
	if len(rd) < 3 {
		return h, errMalformed
	}
	h.Priority = binary.BigEndian.Uint16(rd)
	target, n, err := readNameNoCompress(rd[2:])
	if err != nil {
		return h, err
	}
	h.Target = target
	p := rd[2+n:]
	h.Params = map[uint16][]byte{}
	last := -1
	for len(p) > 0 {
		if len(p) < 4 {
			return h, errMalformed
		}
		key := binary.BigEndian.Uint16(p)
		l := int(binary.BigEndian.Uint16(p[2:]))
		if len(p) < 4+l || int(key) <= last {
			return h, errors.New("malformed SvcParams (length or key order)")
		}
		last = int(key)
		v := p[4 : 4+l]
		p = p[4+l:]
		h.Params[key] = v
		switch key {
		case KeyALPN:
			for len(v) > 0 {
				k := int(v[0])
				if k == 0 || len(v) < 1+k {
					return h, errMalformed
				}
				h.ALPN = append(h.ALPN, string(v[1:1+k]))
				v = v[1+k:]
			}
		case KeyNoDefALPN:
			h.NoDefALP = true
		case KeyPort:
			if len(v) != 2 {
				return h, errMalformed
			}
			h.Port = binary.BigEndian.Uint16(v)
		case KeyECH:
			h.ECH = append([]byte(nil), v...)
		case KeyIPv4Hint:
			if len(v)%4 != 0 {
				return h, errMalformed
			}
			for i := 0; i < len(v); i += 4 {
				h.IPv4Hint = append(h.IPv4Hint, netip.AddrFrom4([4]byte(v[i:i+4])))
			}
		case KeyIPv6Hint:
			if len(v)%16 != 0 {
				return h, errMalformed
			}
			for i := 0; i < len(v); i += 16 {
				h.IPv6Hint = append(h.IPv6Hint, netip.AddrFrom16([16]byte(v[i:i+16])))
			}
		}
	}
	return h, nil
}
