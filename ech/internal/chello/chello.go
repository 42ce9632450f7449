// Package chello parses TLS ClientHello messages and, for split-mode ECH, decrypts the
// encrypted_client_hello extension and reconstructs ClientHelloInner (RFC 9849 §5.1, §7).
//
// Everything here faces untrusted input from the network: every length is checked before
// use and errors are returned, never panics. The split-mode front door relies on that to
// survive malformed and truncated hellos.
package chello

import (
	"crypto/hpke"
	"errors"
	"fmt"
	"io"
)

// Extension and message code points.
const (
	ExtServerName       uint16 = 0x0000
	ExtALPN             uint16 = 0x0010
	ExtPreSharedKey     uint16 = 0x0029
	ExtSupportedVersion uint16 = 0x002b
	ExtECH              uint16 = 0xfe0d
	ExtECHOuterExts     uint16 = 0xfd00

	TypeClientHello uint8 = 1
	RecordHandshake uint8 = 22
	RecordAppData   uint8 = 23
	RecordCCS       uint8 = 20
	RecordAlert     uint8 = 21

	ECHTypeOuter uint8 = 0
	ECHTypeInner uint8 = 1

	MaxRecordPayload = 16384 + 256
	MaxHelloSize     = 1 << 16
)

// Extension is one raw extension in wire order.
type Extension struct {
	Type uint16
	Data []byte
	// Offset of Data inside the handshake message body (after the 4-byte header).
	Offset int
}

// ClientHello is a parsed ClientHello handshake message.
type ClientHello struct {
	Raw           []byte // the whole handshake message, header included
	LegacyVersion uint16
	Random        []byte
	SessionID     []byte
	CipherSuites  []byte
	Compression   []byte
	Extensions    []Extension
	ServerName    string
	ALPN          []string
	HasECH        bool
	ECH           []byte // raw encrypted_client_hello extension data
	ECHOffset     int    // offset of ECH data inside the body
	HasPSK        bool
	PSKIdentity   []byte // first offered identity (a ticket)
}

var errShort = errors.New("truncated ClientHello")

type reader struct{ b []byte }

func (r *reader) u8() (uint8, bool) {
	if len(r.b) < 1 {
		return 0, false
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v, true
}

func (r *reader) u16() (uint16, bool) {
	if len(r.b) < 2 {
		return 0, false
	}
	v := uint16(r.b[0])<<8 | uint16(r.b[1])
	r.b = r.b[2:]
	return v, true
}

func (r *reader) bytes(n int) ([]byte, bool) {
	if n < 0 || len(r.b) < n {
		return nil, false
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v, true
}

func (r *reader) vec8() ([]byte, bool) {
	n, ok := r.u8()
	if !ok {
		return nil, false
	}
	return r.bytes(int(n))
}

func (r *reader) vec16() ([]byte, bool) {
	n, ok := r.u16()
	if !ok {
		return nil, false
	}
	return r.bytes(int(n))
}

// Parse parses a ClientHello handshake message (4-byte header included).
func Parse(msg []byte) (*ClientHello, error) {
	if len(msg) < 4 || msg[0] != TypeClientHello {
		return nil, errors.New("not a ClientHello")
	}
	n := int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3])
	if len(msg) != 4+n {
		return nil, errors.New("ClientHello length mismatch")
	}
	body := msg[4:]
	ch := &ClientHello{Raw: msg}
	r := &reader{body}
	var ok bool
	if ch.LegacyVersion, ok = r.u16(); !ok {
		return nil, errShort
	}
	if ch.Random, ok = r.bytes(32); !ok {
		return nil, errShort
	}
	if ch.SessionID, ok = r.vec8(); !ok || len(ch.SessionID) > 32 {
		return nil, errors.New("bad legacy_session_id")
	}
	if ch.CipherSuites, ok = r.vec16(); !ok || len(ch.CipherSuites) < 2 || len(ch.CipherSuites)%2 != 0 {
		return nil, errors.New("bad cipher_suites")
	}
	if ch.Compression, ok = r.vec8(); !ok || len(ch.Compression) < 1 {
		return nil, errors.New("bad legacy_compression_methods")
	}
	if len(r.b) == 0 {
		return ch, nil // no extensions: legal before TLS 1.3
	}
	exts, ok := r.vec16()
	if !ok || len(r.b) != 0 {
		return nil, errors.New("bad extensions block")
	}
	base := len(body) - len(exts)
	er := &reader{exts}
	seen := make(map[uint16]bool, 16)
	for len(er.b) > 0 {
		typ, ok1 := er.u16()
		data, ok2 := er.vec16()
		if !ok1 || !ok2 {
			return nil, errors.New("bad extension")
		}
		if seen[typ] {
			return nil, fmt.Errorf("duplicate extension 0x%04x", typ)
		}
		seen[typ] = true
		off := base + (len(exts) - len(er.b)) - len(data)
		ch.Extensions = append(ch.Extensions, Extension{Type: typ, Data: data, Offset: off})
		switch typ {
		case ExtServerName:
			ch.ServerName = parseSNI(data)
		case ExtALPN:
			ch.ALPN = parseALPN(data)
		case ExtECH:
			ch.HasECH, ch.ECH, ch.ECHOffset = true, data, off
		case ExtPreSharedKey:
			ch.HasPSK = true
			ch.PSKIdentity = parsePSK(data)
		}
	}
	return ch, nil
}

func parseSNI(d []byte) string {
	r := &reader{d}
	list, ok := r.vec16()
	if !ok {
		return ""
	}
	lr := &reader{list}
	for len(lr.b) > 0 {
		t, ok1 := lr.u8()
		name, ok2 := lr.vec16()
		if !ok1 || !ok2 {
			return ""
		}
		if t == 0 {
			return string(name)
		}
	}
	return ""
}

func parseALPN(d []byte) []string {
	r := &reader{d}
	list, ok := r.vec16()
	if !ok {
		return nil
	}
	lr := &reader{list}
	var out []string
	for len(lr.b) > 0 {
		p, ok := lr.vec8()
		if !ok {
			return out
		}
		out = append(out, string(p))
	}
	return out
}

func parsePSK(d []byte) []byte {
	r := &reader{d}
	ids, ok := r.vec16()
	if !ok {
		return nil
	}
	ir := &reader{ids}
	id, ok := ir.vec16()
	if !ok {
		return nil
	}
	return id
}

// ECHOuter is the parsed outer encrypted_client_hello extension.
type ECHOuter struct {
	KDF, AEAD uint16
	ConfigID  uint8
	Enc       []byte
	Payload   []byte
	// PayloadOffset is the offset of Payload inside the extension data.
	PayloadOffset int
}

// ParseECH parses encrypted_client_hello extension data; for the inner type only the type
// byte is meaningful.
func ParseECH(d []byte) (uint8, *ECHOuter, error) {
	r := &reader{d}
	t, ok := r.u8()
	if !ok {
		return 0, nil, errors.New("empty encrypted_client_hello")
	}
	if t == ECHTypeInner {
		if len(r.b) != 0 {
			return 0, nil, errors.New("inner encrypted_client_hello with data")
		}
		return t, nil, nil
	}
	if t != ECHTypeOuter {
		return 0, nil, fmt.Errorf("unknown encrypted_client_hello type %d", t)
	}
	o := &ECHOuter{}
	var ok1, ok2, ok3, ok4, ok5 bool
	o.KDF, ok1 = r.u16()
	o.AEAD, ok2 = r.u16()
	o.ConfigID, ok3 = r.u8()
	o.Enc, ok4 = r.vec16()
	before := len(d) - len(r.b)
	o.Payload, ok5 = r.vec16()
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || len(r.b) != 0 || len(o.Payload) < 17 {
		return 0, nil, errors.New("malformed outer encrypted_client_hello")
	}
	o.PayloadOffset = before + 2
	return t, o, nil
}

// DecryptKey is what the front needs from an ECH key.
type DecryptKey struct {
	ConfigID uint8
	Config   []byte // serialized ECHConfig, the HPKE info suffix
	Private  hpke.PrivateKey
	Suites   [][2]uint16
}

// ErrNoMatchingKey means no key could decrypt: the front falls back to the public name.
var ErrNoMatchingKey = errors.New("no ECH key matches (config_id or decryption)")

// Decrypted is the result of a successful ECH decryption.
type Decrypted struct {
	Inner     *ClientHello
	Recipient *hpke.Recipient // kept for the second ClientHello after HelloRetryRequest
	Key       *DecryptKey
	Suite     [2]uint16
	ConfigID  uint8
}

// Decrypt tries the keys whose config_id matches the outer extension, as RFC 9849 §7.1
// asks, and reconstructs ClientHelloInner.
func Decrypt(outer *ClientHello, keys []*DecryptKey) (*Decrypted, error) {
	if !outer.HasECH {
		return nil, errors.New("no encrypted_client_hello extension")
	}
	t, o, err := ParseECH(outer.ECH)
	if err != nil {
		return nil, err
	}
	if t != ECHTypeOuter {
		return nil, errors.New("ClientHelloOuter carries an inner-type ECH extension")
	}
	for _, k := range keys {
		if k.ConfigID != o.ConfigID || !hasSuite(k.Suites, o.KDF, o.AEAD) {
			continue
		}
		kdf, err := hpke.NewKDF(o.KDF)
		if err != nil {
			continue
		}
		aead, err := hpke.NewAEAD(o.AEAD)
		if err != nil {
			continue
		}
		info := make([]byte, 0, 8+len(k.Config))
		info = append(append(info, "tls ech\x00"...), k.Config...)
		rcp, err := hpke.NewRecipient(o.Enc, k.Private, kdf, aead, info)
		if err != nil {
			continue
		}
		encoded, err := openPayload(rcp, outer, o)
		if err != nil {
			continue
		}
		inner, err := DecodeInner(outer, encoded)
		if err != nil {
			return nil, fmt.Errorf("decrypted ClientHelloInner is invalid: %v", err)
		}
		return &Decrypted{Inner: inner, Recipient: rcp, Key: k, Suite: [2]uint16{o.KDF, o.AEAD}, ConfigID: o.ConfigID}, nil
	}
	return nil, ErrNoMatchingKey
}

// DecryptSecond handles the ClientHello sent after HelloRetryRequest: same HPKE context,
// empty enc, same config and suite (RFC 9849 §7.1.1).
func DecryptSecond(outer *ClientHello, d *Decrypted) (*ClientHello, error) {
	if !outer.HasECH {
		return nil, errors.New("second ClientHello lacks encrypted_client_hello")
	}
	t, o, err := ParseECH(outer.ECH)
	if err != nil {
		return nil, err
	}
	if t != ECHTypeOuter || o.ConfigID != d.ConfigID || o.KDF != d.Suite[0] || o.AEAD != d.Suite[1] || len(o.Enc) != 0 {
		return nil, errors.New("second ClientHello ECH extension does not match the first")
	}
	encoded, err := openPayload(d.Recipient, outer, o)
	if err != nil {
		return nil, fmt.Errorf("second ClientHello: %v", err)
	}
	return DecodeInner(outer, encoded)
}

func hasSuite(s [][2]uint16, kdf, aead uint16) bool {
	for _, c := range s {
		if c[0] == kdf && c[1] == aead {
			return true
		}
	}
	return false
}

// openPayload decrypts with AAD = ClientHelloOuter body with the payload zeroed (RFC 9849
// §5.2), located by offset rather than by searching for the bytes.
func openPayload(rcp *hpke.Recipient, outer *ClientHello, o *ECHOuter) ([]byte, error) {
	body := outer.Raw[4:]
	aad := make([]byte, len(body))
	copy(aad, body)
	start := outer.ECHOffset + o.PayloadOffset
	if start < 0 || start+len(o.Payload) > len(aad) {
		return nil, errors.New("payload offset out of range")
	}
	clear(aad[start : start+len(o.Payload)])
	return rcp.Open(aad, o.Payload)
}

// DecodeInner reconstructs ClientHelloInner from EncodedClientHelloInner: the outer
// legacy_session_id is restored and ech_outer_extensions is expanded from the outer hello's
// extensions in order (RFC 9849 §5.1). Trailing padding must be zeros.
func DecodeInner(outer *ClientHello, encoded []byte) (*ClientHello, error) {
	r := &reader{encoded}
	vr, ok := r.bytes(34)
	if !ok {
		return nil, errShort
	}
	sid, ok := r.vec8()
	if !ok || len(sid) != 0 {
		return nil, errors.New("EncodedClientHelloInner legacy_session_id must be empty")
	}
	suites, ok1 := r.vec16()
	comp, ok2 := r.vec8()
	exts, ok3 := r.vec16()
	if !ok1 || !ok2 || !ok3 {
		return nil, errShort
	}
	for _, b := range r.b {
		if b != 0 {
			return nil, errors.New("non-zero padding after EncodedClientHelloInner")
		}
	}
	body := make([]byte, 0, len(encoded)+len(outer.Raw))
	body = append(body, vr...)
	body = append(body, uint8(len(outer.SessionID)))
	body = append(body, outer.SessionID...)
	body = be16(body, uint16(len(suites)))
	body = append(body, suites...)
	body = append(body, uint8(len(comp)))
	body = append(body, comp...)
	extStart := len(body)
	body = append(body, 0, 0)
	er := &reader{exts}
	usedOuterExts := false
	for len(er.b) > 0 {
		typ, ok1 := er.u16()
		data, ok2 := er.vec16()
		if !ok1 || !ok2 {
			return nil, errors.New("bad inner extension")
		}
		if typ != ExtECHOuterExts {
			body = be16(body, typ)
			body = be16(body, uint16(len(data)))
			body = append(body, data...)
			continue
		}
		if usedOuterExts {
			return nil, errors.New("ech_outer_extensions appears twice")
		}
		usedOuterExts = true
		dr := &reader{data}
		list, ok := dr.vec8()
		if !ok || len(dr.b) != 0 || len(list) == 0 || len(list)%2 != 0 {
			return nil, errors.New("bad ech_outer_extensions")
		}
		i := 0
		for j := 0; j < len(list); j += 2 {
			want := uint16(list[j])<<8 | uint16(list[j+1])
			if want == ExtECH || want == ExtECHOuterExts {
				return nil, errors.New("ech_outer_extensions references a forbidden extension")
			}
			for i < len(outer.Extensions) && outer.Extensions[i].Type != want {
				i++
			}
			if i == len(outer.Extensions) {
				return nil, fmt.Errorf("ech_outer_extensions references 0x%04x missing or out of order in the outer hello", want)
			}
			e := outer.Extensions[i]
			body = be16(body, e.Type)
			body = be16(body, uint16(len(e.Data)))
			body = append(body, e.Data...)
			i++
		}
	}
	extLen := len(body) - extStart - 2
	if extLen > 0xffff {
		return nil, errors.New("reconstructed extensions too long")
	}
	body[extStart], body[extStart+1] = byte(extLen>>8), byte(extLen)
	msg := make([]byte, 4, 4+len(body))
	msg[0] = TypeClientHello
	msg[1], msg[2], msg[3] = byte(len(body)>>16), byte(len(body)>>8), byte(len(body))
	msg = append(msg, body...)
	inner, err := Parse(msg)
	if err != nil {
		return nil, fmt.Errorf("reconstructed ClientHelloInner: %v", err)
	}
	if !inner.HasECH {
		return nil, errors.New("ClientHelloInner lacks the inner encrypted_client_hello extension")
	}
	if t, _, err := ParseECH(inner.ECH); err != nil || t != ECHTypeInner {
		return nil, errors.New("ClientHelloInner encrypted_client_hello is not of inner type")
	}
	return inner, nil
}

func be16(b []byte, v uint16) []byte { return append(b, byte(v>>8), byte(v)) }

// ReadHandshakeMessage reads TLS records from r until one whole handshake message is
// assembled. It returns the message and every raw byte consumed (for replay). Only
// handshake records may appear; limits guard memory.
func ReadHandshakeMessage(r io.Reader, raw []byte) (msg []byte, consumed []byte, err error) {
	consumed = raw
	var hdr [5]byte
	for {
		if _, err = io.ReadFull(r, hdr[:]); err != nil {
			return nil, consumed, fmt.Errorf("reading TLS record header: %w", err)
		}
		consumed = append(consumed, hdr[:]...)
		if hdr[0] != RecordHandshake {
			return nil, consumed, fmt.Errorf("expected a TLS handshake record, got content type %d", hdr[0])
		}
		if hdr[1] != 3 {
			return nil, consumed, fmt.Errorf("not TLS (record version 0x%02x%02x)", hdr[1], hdr[2])
		}
		n := int(hdr[3])<<8 | int(hdr[4])
		if n == 0 || n > MaxRecordPayload {
			return nil, consumed, fmt.Errorf("bad TLS record length %d", n)
		}
		start := len(consumed)
		consumed = append(consumed, make([]byte, n)...)
		if _, err = io.ReadFull(r, consumed[start:]); err != nil {
			return nil, consumed[:start], fmt.Errorf("reading TLS record: %w", err)
		}
		msg = append(msg, consumed[start:]...)
		if len(msg) >= 4 {
			want := 4 + (int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3]))
			if want > MaxHelloSize {
				return nil, consumed, fmt.Errorf("handshake message too large (%d bytes)", want)
			}
			if len(msg) == want {
				return msg, consumed, nil
			}
			if len(msg) > want {
				return nil, consumed, errors.New("extra data after the handshake message in its records")
			}
		}
	}
}

// Records frames a handshake message into TLS handshake records.
func Records(msg []byte, version uint16) []byte {
	out := make([]byte, 0, len(msg)+5*(len(msg)/16384+1))
	for len(msg) > 0 {
		n := min(len(msg), 16384)
		out = append(out, RecordHandshake, byte(version>>8), byte(version), byte(n>>8), byte(n))
		out = append(out, msg[:n]...)
		msg = msg[n:]
	}
	return out
}

// OuterInfo extracts what the shared-mode front door logs from the raw first bytes of a
// connection: the outer hello's random, SNI and ECH config id. ok is false if the bytes do
// not hold a complete ClientHello.
func OuterInfo(head []byte) (ch *ClientHello, ok bool) {
	var msg []byte
	for len(head) >= 5 {
		if head[0] != RecordHandshake {
			return nil, false
		}
		n := int(head[3])<<8 | int(head[4])
		if len(head) < 5+n {
			return nil, false
		}
		msg = append(msg, head[5:5+n]...)
		head = head[5+n:]
		if len(msg) >= 4 {
			want := 4 + (int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3]))
			if len(msg) >= want {
				c, err := Parse(msg[:want])
				return c, err == nil
			}
		}
	}
	return nil, false
}
