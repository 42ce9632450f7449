package frontlog

import (
	"encoding/binary"
	"strconv"
	"strings"
)

// SYN is the transport fingerprint of one connection, read from the client's SYN as the
// kernel saved it (TCP_SAVED_SYN: the IP header and the TCP header with its options). A
// front door sees all of it for free; the linkability analysis asks which of these fields
// still tie a subscriber's flows together once the source address is an alias.
type SYN struct {
	IPVersion int `json:"ip_version"`
	// TTL is the IPv4 TTL or the IPv6 hop limit as it arrived (initial value minus hops).
	TTL int `json:"ttl"`
	// IPID is the IPv4 identification field (null for IPv6).
	IPID *int `json:"ip_id"`
	DF   bool `json:"df"`
	// Window is the SYN's TCP window field (unscaled, as on the wire).
	Window int `json:"window"`
	// Options is the TCP option kinds in wire order, p0f-style: mss, nop, ws, sok (SACK
	// permitted), ts, eol, or the number for any other kind ("mss,sok,ts,nop,ws").
	Options string `json:"options"`
	MSS     *int   `json:"mss"`
	WScale  *int   `json:"wscale"`
	// TSval is the TCP timestamp value (null without the timestamp option): TSval minus the
	// arrival time in ms is the sender's clock offset, a linking key if the sender keeps
	// it per host rather than per connection.
	TSval *uint32 `json:"tsval"`
}

// ParseSYN parses a saved SYN (IPv4 or IPv6 header, then TCP). It returns nil for anything
// it cannot read: the fingerprint is observational and must never fail a connection.
func ParseSYN(b []byte) *SYN {
	if len(b) < 1 {
		return nil
	}
	s := &SYN{IPVersion: int(b[0] >> 4)}
	var tcp []byte
	switch s.IPVersion {
	case 4:
		ihl := int(b[0]&0x0f) * 4
		if ihl < 20 || len(b) < ihl {
			return nil
		}
		s.TTL = int(b[8])
		id := int(binary.BigEndian.Uint16(b[4:6]))
		s.IPID = &id
		s.DF = b[6]&0x40 != 0
		tcp = b[ihl:]
	case 6:
		if len(b) < 40 {
			return nil
		}
		s.TTL = int(b[7])
		next, off := b[6], 40
		// Skip extension headers (hop-by-hop, routing, destination options) to TCP.
		for next == 0 || next == 43 || next == 60 {
			if len(b) < off+8 {
				return nil
			}
			next, off = b[off], off+8*(int(b[off+1])+1)
		}
		if next != 6 || len(b) < off {
			return nil
		}
		tcp = b[off:]
	default:
		return nil
	}
	if len(tcp) < 20 {
		return nil
	}
	s.Window = int(binary.BigEndian.Uint16(tcp[14:16]))
	doff := int(tcp[12]>>4) * 4
	if doff < 20 || len(tcp) < doff {
		return nil
	}
	var kinds []string
	opts := tcp[20:doff]
	for len(opts) > 0 {
		k := opts[0]
		if k == 0 {
			kinds = append(kinds, "eol")
			break
		}
		if k == 1 {
			kinds = append(kinds, "nop")
			opts = opts[1:]
			continue
		}
		if len(opts) < 2 || int(opts[1]) < 2 || len(opts) < int(opts[1]) {
			kinds = append(kinds, "bad")
			break
		}
		data := opts[2:opts[1]]
		switch k {
		case 2:
			kinds = append(kinds, "mss")
			if len(data) == 2 {
				v := int(binary.BigEndian.Uint16(data))
				s.MSS = &v
			}
		case 3:
			kinds = append(kinds, "ws")
			if len(data) == 1 {
				v := int(data[0])
				s.WScale = &v
			}
		case 4:
			kinds = append(kinds, "sok")
		case 8:
			kinds = append(kinds, "ts")
			if len(data) == 8 {
				v := binary.BigEndian.Uint32(data[:4])
				s.TSval = &v
			}
		default:
			kinds = append(kinds, strconv.Itoa(int(k)))
		}
		opts = opts[opts[1]:]
	}
	s.Options = strings.Join(kinds, ",")
	return s
}

// H2Settings renders a client's HTTP/2 connection preface fingerprint in the form of the
// Akamai HTTP/2 fingerprint's first two fields: "id:value;id:value|window_update" (the
// SETTINGS in the order sent, then the connection-level WINDOW_UPDATE increment, 0 if none
// came right after SETTINGS). ok is false until the preface and SETTINGS are complete.
func H2Settings(b []byte) (fp string, ok bool) {
	const preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	if len(b) < len(preface)+9 || string(b[:len(preface)]) != preface {
		return "", false
	}
	b = b[len(preface):]
	n := int(b[0])<<16 | int(b[1])<<8 | int(b[2])
	if b[3] != 4 || len(b) < 9+n || n%6 != 0 {
		return "", false
	}
	var parts []string
	for p := b[9 : 9+n]; len(p) >= 6; p = p[6:] {
		parts = append(parts, strconv.Itoa(int(binary.BigEndian.Uint16(p)))+":"+
			strconv.FormatUint(uint64(binary.BigEndian.Uint32(p[2:6])), 10))
	}
	wu := uint32(0)
	rest := b[9+n:]
	if len(rest) >= 13 && rest[3] == 8 && binary.BigEndian.Uint32(rest[5:9])&0x7fffffff == 0 {
		wu = binary.BigEndian.Uint32(rest[9:13]) & 0x7fffffff
	}
	return strings.Join(parts, ";") + "|" + strconv.FormatUint(uint64(wu), 10), true
}
