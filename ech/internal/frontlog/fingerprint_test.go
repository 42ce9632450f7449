package frontlog

import (
	"net"
	"strings"
	"testing"
)

// TestSavedSYNOnLoopback reads a real SYN back from the kernel: Linux's default SYN carries
// mss, sok, ts, nop, ws in this order, the TTL is the namespace's default, and TSval is set.
func TestSavedSYNOnLoopback(t *testing.T) {
	ln, err := Listen("127.0.0.1:0", true)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(done)
			return
		}
		done <- c
	}()
	cl, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	c := <-done
	if c == nil {
		t.Fatal("accept failed")
	}
	defer c.Close()
	raw, rtt := Transport(c)
	s := ParseSYN(raw)
	if s == nil {
		t.Fatalf("no saved SYN (%d bytes)", len(raw))
	}
	if s.IPVersion != 4 || s.TTL < 1 || s.IPID == nil || s.MSS == nil || *s.MSS < 536 {
		t.Fatalf("bad SYN %+v", s)
	}
	if !strings.Contains(s.Options, "mss") || (strings.Contains(s.Options, "ts") != (s.TSval != nil)) {
		t.Fatalf("options %q tsval %v", s.Options, s.TSval)
	}
	if rtt == 0 {
		t.Fatal("TCP_INFO rtt is 0")
	}
	// Read once: the kernel frees the saved SYN after the first read.
	if again, _ := Transport(c); again != nil {
		t.Fatalf("saved SYN read twice (%d bytes)", len(again))
	}
}

func TestParseSYNHandBuilt(t *testing.T) {
	// IPv6, hop limit 57, TCP with window 1024 and options nop,nop,ts(7,0),mss 1400.
	b := make([]byte, 40+36)
	b[0], b[6], b[7] = 0x60, 6, 57
	tcp := b[40:]
	tcp[12] = 9 << 4
	tcp[14], tcp[15] = 0x04, 0x00
	copy(tcp[20:], []byte{1, 1, 8, 10, 0, 0, 0, 7, 0, 0, 0, 0, 2, 4, 0x05, 0x78})
	s := ParseSYN(b)
	if s == nil || s.IPVersion != 6 || s.TTL != 57 || s.IPID != nil || s.Window != 1024 ||
		s.Options != "nop,nop,ts,mss" || s.TSval == nil || *s.TSval != 7 || *s.MSS != 1400 || s.WScale != nil {
		t.Fatalf("got %+v", s)
	}
	if ParseSYN(b[:30]) != nil || ParseSYN(nil) != nil {
		t.Fatal("truncated SYN parsed")
	}
}

func TestH2Settings(t *testing.T) {
	p := []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
	p = append(p, 0, 0, 12, 4, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 4, 0, 0x40, 0, 0)
	if _, ok := H2Settings(p[:30]); ok {
		t.Fatal("incomplete preface accepted")
	}
	fp, ok := H2Settings(p)
	if !ok || fp != "2:0;4:4194304|0" {
		t.Fatalf("got %q %v", fp, ok)
	}
	p = append(p, 0, 0, 4, 8, 0, 0, 0, 0, 0, 0x3f, 0xff, 0, 1)
	if fp, _ = H2Settings(p); fp != "2:0;4:4194304|1073676289" {
		t.Fatalf("got %q", fp)
	}
}
