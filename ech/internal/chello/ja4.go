package chello

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
)

// Extension code points JA4 needs besides those above.
const (
	ExtSignatureAlgorithms uint16 = 0x000d
	ExtSupportedGroups     uint16 = 0x000a
)

// IsGREASE reports an RFC 8701 GREASE value (0x0a0a, 0x1a1a, ... 0xfafa).
func IsGREASE(v uint16) bool { return v&0x0f0f == 0x0a0a && v>>8 == v&0xff }

// JA4 is the JA4 TLS client fingerprint of a ClientHello received over TCP, per the public
// FoxIO specification (github.com/FoxIO-LLC/ja4, JA4 section):
//
//	a = "t" + version + ("d" SNI present | "i") + 2-digit cipher count + 2-digit extension
//	    count + first and last character of the first ALPN value ("00" if none)
//	b = first 12 hex of SHA-256 of the sorted cipher suites ("%04x", comma separated)
//	c = first 12 hex of SHA-256 of the sorted extensions without SNI and ALPN, then "_" and
//	    the signature algorithms in the order sent
//
// GREASE values are ignored everywhere; counts cap at 99; version is the highest
// supported_versions entry, else legacy_version. The front door computes it on the
// ClientHelloOuter it received: the only hello a front door without the ECH key sees, and
// the one every on-path observer sees.
func JA4(ch *ClientHello) string {
	suites := u16s(ch.CipherSuites)
	ciphers := make([]uint16, 0, len(suites))
	for _, s := range suites {
		if !IsGREASE(s) {
			ciphers = append(ciphers, s)
		}
	}
	version := ch.LegacyVersion
	var exts, sigalgs []uint16
	nExt := 0
	for _, e := range ch.Extensions {
		if IsGREASE(e.Type) {
			continue
		}
		nExt++
		switch e.Type {
		case ExtSupportedVersion:
			if len(e.Data) >= 1 {
				best := uint16(0)
				for _, v := range u16s(e.Data[1:min(len(e.Data), 1+int(e.Data[0]))]) {
					if !IsGREASE(v) && v > best {
						best = v
					}
				}
				if best != 0 {
					version = best
				}
			}
		case ExtSignatureAlgorithms:
			if len(e.Data) >= 2 {
				n := int(e.Data[0])<<8 | int(e.Data[1])
				for _, v := range u16s(e.Data[2:min(len(e.Data), 2+n)]) {
					if !IsGREASE(v) {
						sigalgs = append(sigalgs, v)
					}
				}
			}
		}
		if e.Type != ExtServerName && e.Type != ExtALPN {
			exts = append(exts, e.Type)
		}
	}
	sni := "i"
	if ch.ServerName != "" {
		sni = "d"
	}
	a := fmt.Sprintf("t%s%s%02d%02d%s", ja4Version(version), sni, min(len(ciphers), 99),
		min(nExt, 99), ja4ALPN(ch.ALPN))
	slices.Sort(ciphers)
	b := ja4Hash(hexList(ciphers))
	slices.Sort(exts)
	c := "000000000000"
	if len(exts) > 0 {
		s := hexList(exts)
		if len(sigalgs) > 0 {
			s += "_" + hexList(sigalgs)
		}
		c = ja4Hash(s)
	}
	return a + "_" + b + "_" + c
}

func u16s(b []byte) []uint16 {
	out := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		out = append(out, uint16(b[i])<<8|uint16(b[i+1]))
	}
	return out
}

func hexList(v []uint16) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = fmt.Sprintf("%04x", x)
	}
	return strings.Join(parts, ",")
}

func ja4Hash(s string) string {
	if s == "" {
		return "000000000000"
	}
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])[:12]
}

func ja4Version(v uint16) string {
	switch v {
	case 0x0304:
		return "13"
	case 0x0303:
		return "12"
	case 0x0302:
		return "11"
	case 0x0301:
		return "10"
	case 0x0300:
		return "s3"
	case 0x0002, 0x0200:
		return "s2"
	case 0xfeff:
		return "d1"
	case 0xfefd:
		return "d2"
	case 0xfefc:
		return "d3"
	}
	return "00"
}

func isAlnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// ja4ALPN is the first and last character of the first ALPN value; when either is not
// alphanumeric, the first hex digit of the first byte and the last hex digit of the last.
func ja4ALPN(alpn []string) string {
	if len(alpn) == 0 || alpn[0] == "" {
		return "00"
	}
	v := alpn[0]
	first, last := v[0], v[len(v)-1]
	if isAlnum(first) && isAlnum(last) {
		return string([]byte{first, last})
	}
	h := hex.EncodeToString([]byte(v))
	return string([]byte{h[0], h[len(h)-1]})
}

// Groups is the supported_groups list in the order sent, GREASE removed ("001d,0017"):
// JA4 hashes extension types only, so a client that differs only in its key-exchange
// groups (crypto/tls CurvePreferences) has the same JA4 and differs here.
func Groups(ch *ClientHello) string {
	for _, e := range ch.Extensions {
		if e.Type != ExtSupportedGroups || len(e.Data) < 2 {
			continue
		}
		n := int(e.Data[0])<<8 | int(e.Data[1])
		var out []uint16
		for _, v := range u16s(e.Data[2:min(len(e.Data), 2+n)]) {
			if !IsGREASE(v) {
				out = append(out, v)
			}
		}
		return hexList(out)
	}
	return ""
}
