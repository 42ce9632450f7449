package chello

import "testing"

func ext(typ uint16, data []byte) []byte {
	return append([]byte{byte(typ >> 8), byte(typ), byte(len(data) >> 8), byte(len(data))}, data...)
}

func u16list(prefix int, v ...uint16) []byte {
	var b []byte
	for _, x := range v {
		b = append(b, byte(x>>8), byte(x))
	}
	if prefix == 1 {
		return append([]byte{byte(len(b))}, b...)
	}
	return append([]byte{byte(len(b) >> 8), byte(len(b))}, b...)
}

// TestJA4SpecExample rebuilds the ClientHello behind the JA4 specification's example
// fingerprint t13d1516h2_8daaf6152771_e5627efa2ab1 (Chrome), with GREASE added in ciphers,
// extensions and versions, which JA4 must ignore.
func TestJA4SpecExample(t *testing.T) {
	body := []byte{3, 3}
	body = append(body, make([]byte, 32)...)
	body = append(body, 0)
	body = append(body, u16list(2, 0x0a0a, 0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030,
		0xcca9, 0xcca8, 0xc013, 0xc014, 0x009c, 0x009d, 0x002f, 0x0035)...)
	body = append(body, 1, 0)
	sni := []byte{0, 14, 0, 0, 11}
	sni = append(sni, "example.com"...)
	alpn := []byte{0, 12, 2, 'h', '2', 8}
	alpn = append(alpn, "http/1.1"...)
	var exts []byte
	exts = append(exts, ext(0x2a2a, nil)...)
	exts = append(exts, ext(ExtServerName, sni)...)
	exts = append(exts, ext(ExtALPN, alpn)...)
	exts = append(exts, ext(ExtSupportedVersion, u16list(1, 0x3a3a, 0x0304, 0x0303))...)
	exts = append(exts, ext(ExtSignatureAlgorithms, u16list(2, 0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601))...)
	exts = append(exts, ext(ExtSupportedGroups, u16list(2, 0x4a4a, 0x001d, 0x0017, 0x0018))...)
	for _, typ := range []uint16{0x0005, 0x000b, 0x0012, 0x0015, 0x0017, 0x001b, 0x0023, 0x002d, 0x0033, 0x4469, 0xff01} {
		exts = append(exts, ext(typ, []byte{0})...)
	}
	body = append(body, byte(len(exts)>>8), byte(len(exts)))
	body = append(body, exts...)
	msg := append([]byte{TypeClientHello, 0, byte(len(body) >> 8), byte(len(body))}, body...)
	ch, err := Parse(msg)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := JA4(ch), "t13d1516h2_8daaf6152771_e5627efa2ab1"; got != want {
		t.Fatalf("JA4 = %s, want %s", got, want)
	}
	if got := Groups(ch); got != "001d,0017,0018" {
		t.Fatalf("groups = %q", got)
	}
}

func TestJA4ALPNAndNoSNI(t *testing.T) {
	if ja4ALPN(nil) != "00" || ja4ALPN([]string{"http/1.1"}) != "h1" || ja4ALPN([]string{"\xabx\xcd"}) != "ad" {
		t.Fatal("ALPN rule")
	}
}
