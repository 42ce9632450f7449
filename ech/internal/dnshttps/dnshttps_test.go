package dnshttps

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"
)

// fakeServer answers every query with a fixed HTTPS (and A) answer, using name compression.
func fakeServer(t *testing.T, ech []byte) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			q := buf[:n]
			// Question ends after the name + 4 bytes.
			off := 12
			for q[off] != 0 {
				off += int(q[off]) + 1
			}
			qtype := binary.BigEndian.Uint16(q[off+1:])
			qend := off + 5
			resp := append([]byte(nil), q[:qend]...)
			resp[2] |= 0x84                          // QR, AA
			binary.BigEndian.PutUint16(resp[6:], 1)  // ANCOUNT
			binary.BigEndian.PutUint16(resp[10:], 0) // ARCOUNT
			resp = append(resp, 0xc0, 12)            // pointer to qname
			resp = binary.BigEndian.AppendUint16(resp, qtype)
			resp = binary.BigEndian.AppendUint16(resp, 1)
			resp = binary.BigEndian.AppendUint32(resp, 60)
			var rd []byte
			switch qtype {
			case TypeA:
				rd = []byte{198, 18, 251, 1}
			case TypeAAAA:
				a := netip.MustParseAddr("2001:db8:fe98::1").As16()
				rd = a[:]
			case TypeHTTPS:
				rd = binary.BigEndian.AppendUint16(nil, 1)
				rd = append(rd, 0) // target "."
				alpn := []byte{2, 'h', '2', 8, 'h', 't', 't', 'p', '/', '1', '.', '1'}
				rd = binary.BigEndian.AppendUint16(rd, KeyALPN)
				rd = binary.BigEndian.AppendUint16(rd, uint16(len(alpn)))
				rd = append(rd, alpn...)
				rd = binary.BigEndian.AppendUint16(rd, KeyIPv4Hint)
				rd = binary.BigEndian.AppendUint16(rd, 4)
				rd = append(rd, 198, 18, 251, 1)
				rd = binary.BigEndian.AppendUint16(rd, KeyECH)
				rd = binary.BigEndian.AppendUint16(rd, uint16(len(ech)))
				rd = append(rd, ech...)
				a := netip.MustParseAddr("2001:db8:fe98::1").As16()
				rd = binary.BigEndian.AppendUint16(rd, KeyIPv6Hint)
				rd = binary.BigEndian.AppendUint16(rd, 16)
				rd = append(rd, a[:]...)
			}
			resp = binary.BigEndian.AppendUint16(resp, uint16(len(rd)))
			resp = append(resp, rd...)
			_, _ = pc.WriteTo(resp, addr)
		}
	}()
	return pc.LocalAddr().String()
}

func TestQueryHTTPSAndA(t *testing.T) {
	ech := []byte{0, 4, 0xfe, 0x0d, 0, 0}
	c := &Client{Server: fakeServer(t, ech), Timeout: time.Second}
	ans, err := c.Query("site-0001.example", TypeHTTPS)
	if err != nil {
		t.Fatal(err)
	}
	if len(ans.HTTPS) != 1 {
		t.Fatalf("want 1 HTTPS record, got %d", len(ans.HTTPS))
	}
	h := ans.HTTPS[0]
	if h.Priority != 1 || h.Target != "" || string(h.ECH) != string(ech) || len(h.ALPN) != 2 || h.ALPN[1] != "http/1.1" {
		t.Fatalf("bad HTTPS record %+v", h)
	}
	if len(h.IPv4Hint) != 1 || h.IPv4Hint[0].String() != "198.18.251.1" || h.IPv6Hint[0].String() != "2001:db8:fe98::1" {
		t.Fatalf("bad hints %+v %+v", h.IPv4Hint, h.IPv6Hint)
	}
	a, err := c.Query("site-0001.example", TypeA)
	if err != nil || len(a.Addrs) != 1 || a.Addrs[0].String() != "198.18.251.1" {
		t.Fatalf("A: %v %+v", err, a)
	}
	aaaa, err := c.Query("site-0001.example", TypeAAAA)
	if err != nil || len(aaaa.Addrs) != 1 || aaaa.Addrs[0].String() != "2001:db8:fe98::1" {
		t.Fatalf("AAAA: %v %+v", err, aaaa)
	}
}

func TestParseHTTPSMalformed(t *testing.T) {
	good := []byte{0, 1, 0, 0, 5, 0, 2, 0xaa, 0xbb}
	if _, err := ParseHTTPS(good); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(good); i++ {
		if _, err := ParseHTTPS(good[:i]); err == nil && i < len(good) && i > 3 {
			t.Fatalf("truncated rdata (%d bytes) accepted", i)
		}
	}
	// Keys out of order are invalid (RFC 9460 §2.2).
	if _, err := ParseHTTPS([]byte{0, 1, 0, 0, 5, 0, 0, 0, 1, 0, 0}); err == nil {
		t.Fatal("out-of-order keys accepted")
	}
}

func TestReadNameLoops(t *testing.T) {
	msg := []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xc0, 12}
	if _, _, err := readName(msg, 12); err == nil {
		t.Fatal("compression loop accepted")
	}
}
