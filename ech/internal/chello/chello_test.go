package chello

import (
	"bytes"
	"crypto/tls"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"cfrbench/ech/internal/echkeys"
)

// clientHelloFrom captures the ClientHello a real Go ECH client sends.
func clientHelloFrom(t *testing.T, k *echkeys.Key, inner string) []byte {
	t.Helper()
	c, s := net.Pipe()
	go func() {
		cfg := &tls.Config{ServerName: inner, MinVersion: tls.VersionTLS13, InsecureSkipVerify: true,
			EncryptedClientHelloConfigList: echkeys.ConfigListOf(k.Config)}
		_ = tls.Client(c, cfg).Handshake()
	}()
	_ = s.SetDeadline(time.Now().Add(5 * time.Second))
	msg, _, err := ReadHandshakeMessage(s, nil)
	s.Close()
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

func decryptKey(k *echkeys.Key) *DecryptKey {
	return &DecryptKey{ConfigID: k.ConfigID, Config: k.Config, Private: k.HPKEPrivateKey(), Suites: k.Suites}
}

func TestDecryptRealClientHello(t *testing.T) {
	k, err := echkeys.Generate("cdn.example", 42, 64)
	if err != nil {
		t.Fatal(err)
	}
	msg := clientHelloFrom(t, k, "pineapple-pizza.example")
	outer, err := Parse(msg)
	if err != nil {
		t.Fatal(err)
	}
	if outer.ServerName != "cdn.example" || !outer.HasECH {
		t.Fatalf("outer SNI %q, ECH %v", outer.ServerName, outer.HasECH)
	}
	if bytes.Contains(msg, []byte("pineapple")) {
		t.Fatal("inner name visible in ClientHelloOuter")
	}
	d, err := Decrypt(outer, []*DecryptKey{decryptKey(k)})
	if err != nil {
		t.Fatal(err)
	}
	if d.Inner.ServerName != "pineapple-pizza.example" {
		t.Fatalf("inner SNI %q", d.Inner.ServerName)
	}
	if !bytes.Equal(d.Inner.SessionID, outer.SessionID) {
		t.Fatal("inner legacy_session_id not restored from outer")
	}
	other, _ := echkeys.Generate("cdn.example", 42, 64) // same config id, other key
	if _, err := Decrypt(outer, []*DecryptKey{decryptKey(other)}); err == nil {
		t.Fatal("decrypted with the wrong key")
	}
}

func TestOuterExtensionsExpansion(t *testing.T) {
	k, _ := echkeys.Generate("cdn.example", 1, 64)
	outer, err := Parse(clientHelloFrom(t, k, "site-0001.example"))
	if err != nil {
		t.Fatal(err)
	}
	var want []Extension
	for _, e := range outer.Extensions {
		if e.Type == ExtSupportedVersion || e.Type == 0x0033 || e.Type == 0x000d {
			want = append(want, e)
		}
	}
	if len(want) < 2 {
		t.Fatalf("outer hello lacks the extensions this test references (%d)", len(want))
	}
	sni := []byte{0, 20, 0, 0, 17}
	sni = append(sni, "site-0001.example"...)
	var exts []byte
	exts = be16(exts, ExtServerName)
	exts = be16(exts, uint16(len(sni)))
	exts = append(exts, sni...)
	list := []byte{byte(2 * len(want))}
	for _, e := range want {
		list = be16(list, e.Type)
	}
	exts = be16(exts, ExtECHOuterExts)
	exts = be16(exts, uint16(len(list)))
	exts = append(exts, list...)
	exts = append(exts, 0xfe, 0x0d, 0, 1, ECHTypeInner)
	enc := append([]byte{3, 3}, make([]byte, 32)...)
	enc = append(enc, 0) // empty session id
	enc = append(enc, 0, 2, 0x13, 0x01)
	enc = append(enc, 1, 0)
	enc = be16(enc, uint16(len(exts)))
	enc = append(enc, exts...)
	enc = append(enc, make([]byte, 11)...) // padding
	inner, err := DecodeInner(outer, enc)
	if err != nil {
		t.Fatal(err)
	}
	if inner.ServerName != "site-0001.example" {
		t.Fatalf("inner SNI %q", inner.ServerName)
	}
	got := map[uint16][]byte{}
	for _, e := range inner.Extensions {
		got[e.Type] = e.Data
	}
	for _, e := range want {
		if !bytes.Equal(got[e.Type], e.Data) {
			t.Fatalf("extension 0x%04x not copied from the outer hello", e.Type)
		}
	}
	// Referencing in reverse order must fail (RFC 9849 §5.1).
	if len(want) >= 2 {
		bad := bytes.Replace(enc, list[1:], reverse16(list[1:]), 1)
		if _, err := DecodeInner(outer, bad); err == nil {
			t.Fatal("out-of-order ech_outer_extensions accepted")
		}
	}
	// Non-zero padding must fail.
	bad := append([]byte(nil), enc...)
	bad[len(bad)-1] = 1
	if _, err := DecodeInner(outer, bad); err == nil {
		t.Fatal("non-zero padding accepted")
	}
}

func reverse16(b []byte) []byte {
	out := make([]byte, 0, len(b))
	for i := len(b) - 2; i >= 0; i -= 2 {
		out = append(out, b[i], b[i+1])
	}
	return out
}

// TestMalformedNeverPanics feeds truncations, bit flips and random bytes to every parser.
func TestMalformedNeverPanics(t *testing.T) {
	k, _ := echkeys.Generate("cdn.example", 9, 64)
	msg := clientHelloFrom(t, k, "site-0002.example")
	keys := []*DecryptKey{decryptKey(k)}
	try := func(b []byte) {
		defer func() {
			if r := recover(); r != nil {
				t.Fatalf("panic on %x: %v", b, r)
			}
		}()
		if ch, err := Parse(b); err == nil {
			_, _ = Decrypt(ch, keys)
		}
		_, _ = OuterInfo(Records(b, 0x0301))
		_, _, _ = ReadHandshakeMessage(bytes.NewReader(Records(b, 0x0301)), nil)
		_, _, _ = ParseECH(b)
	}
	for i := 0; i < len(msg); i++ {
		try(msg[:i])
	}
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 3000; i++ {
		b := append([]byte(nil), msg...)
		for j := 0; j < 1+r.IntN(4); j++ {
			b[r.IntN(len(b))] ^= byte(1 << r.IntN(8))
		}
		try(b)
		junk := make([]byte, r.IntN(600))
		for j := range junk {
			junk[j] = byte(r.Uint32())
		}
		if len(junk) > 0 {
			junk[0] = TypeClientHello
		}
		try(junk)
	}
}
