// Package echkeys generates, stores and loads ECH keys (RFC 9849) for the front door.
//
// A key file holds one X25519 private key and its ECHConfig in the PEM format OpenSSL,
// BoringSSL-based servers and HAProxy use for ECH (draft-farrell-tls-pemesni): a PKCS#8
// "PRIVATE KEY" block followed by an "ECHCONFIG" block whose body is an ECHConfigList
// with that one config. Keeping the common format means the files can be checked with
// other tools and nothing testbed-specific leaks into them.
//
// A key directory holds any number of such files. Files ending in ".ech" are accepted and
// advertised (in DNS and as retry configs); files ending in ".ech.retired" are still
// accepted for decryption but no longer advertised, the usual grace period of a rotation.
package echkeys

import (
	"bytes"
	"crypto/ecdh"
	"crypto/hpke"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Identifiers from RFC 9180 and RFC 9849.
const (
	ECHVersion       uint16 = 0xfe0d
	KEMX25519        uint16 = 0x0020
	KDFHKDFSHA256    uint16 = 0x0001
	AEADAES128GCM    uint16 = 0x0001
	AEADChaCha20Poly uint16 = 0x0003

	// DefaultMaxNameLength pads inner server names up to this length so that names of
	// different lengths give ClientHelloOuter of the same size.
	DefaultMaxNameLength = 64

	suffixActive  = ".ech"
	suffixRetired = ".ech.retired"
)

// Key is one loaded ECH key with its config.
type Key struct {
	Path       string
	ConfigID   uint8
	PublicName string
	Config     []byte // one serialized ECHConfig (version, length, contents)
	PrivateKey []byte // raw X25519 private key, 32 bytes
	Advertise  bool   // in DNS and retry configs
	ModTime    time.Time
	Suites     [][2]uint16 // (KDF, AEAD) pairs

	hpkeKey hpke.PrivateKey // parsed once, reused for every decryption (split mode)
}

// HPKEPrivateKey returns the parsed HPKE private key (split-mode front decryption).
func (k *Key) HPKEPrivateKey() hpke.PrivateKey { return k.hpkeKey }

// MarshalConfig serializes an ECHConfig for an X25519 public key with HKDF-SHA256 and both
// AES-128-GCM and ChaCha20-Poly1305, no extensions.
func MarshalConfig(configID uint8, publicKey []byte, publicName string, maxNameLen uint8) []byte {
	var c []byte
	c = append(c, configID)
	c = be16(c, KEMX25519)
	c = be16(c, uint16(len(publicKey)))
	c = append(c, publicKey...)
	c = be16(c, 8)
	c = be16(c, KDFHKDFSHA256)
	c = be16(c, AEADAES128GCM)
	c = be16(c, KDFHKDFSHA256)
	c = be16(c, AEADChaCha20Poly)
	c = append(c, maxNameLen)
	c = append(c, uint8(len(publicName)))
	c = append(c, publicName...)
	c = be16(c, 0) // no extensions
	out := be16(nil, ECHVersion)
	out = be16(out, uint16(len(c)))
	return append(out, c...)
}

func be16(b []byte, v uint16) []byte { return append(b, byte(v>>8), byte(v)) }

// ConfigListOf wraps serialized ECHConfigs into an ECHConfigList.
func ConfigListOf(configs ...[]byte) []byte {
	n := 0
	for _, c := range configs {
		n += len(c)
	}
	out := be16(make([]byte, 0, n+2), uint16(n))
	for _, c := range configs {
		out = append(out, c...)
	}
	return out
}

// Config is the parsed form of one ECHConfig (only version 0xfe0d is parsed).
type Config struct {
	Raw           []byte
	ConfigID      uint8
	KEM           uint16
	PublicKey     []byte
	Suites        [][2]uint16
	MaxNameLength uint8
	PublicName    string
}

// ParseConfigList parses an ECHConfigList, skipping configs of other versions.
func ParseConfigList(b []byte) ([]Config, error) {
	if len(b) < 2 || int(b[0])<<8|int(b[1]) != len(b)-2 {
		return nil, errors.New("malformed ECHConfigList: bad length")
	}
	b = b[2:]
	var out []Config
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, errors.New("malformed ECHConfigList: truncated config")
		}
		ver := uint16(b[0])<<8 | uint16(b[1])
		n := int(b[2])<<8 | int(b[3])
		if len(b) < 4+n {
			return nil, errors.New("malformed ECHConfigList: config longer than list")
		}
		raw, body := b[:4+n], b[4:4+n]
		b = b[4+n:]
		if ver != ECHVersion {
			continue
		}
		c, err := parseContents(body)
		if err != nil {
			return nil, err
		}
		c.Raw = raw
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("ECHConfigList has no config of version 0xfe0d")
	}
	return out, nil
}

func parseContents(b []byte) (Config, error) {
	var c Config
	bad := func(f string) (Config, error) { return Config{}, fmt.Errorf("malformed ECHConfig: %s", f) }
	if len(b) < 5 {
		return bad("key_config")
	}
	c.ConfigID = b[0]
	c.KEM = uint16(b[1])<<8 | uint16(b[2])
	n := int(b[3])<<8 | int(b[4])
	b = b[5:]
	if n == 0 || len(b) < n {
		return bad("public_key")
	}
	c.PublicKey, b = b[:n], b[n:]
	if len(b) < 2 {
		return bad("cipher_suites")
	}
	n = int(b[0])<<8 | int(b[1])
	b = b[2:]
	if n < 4 || n%4 != 0 || len(b) < n {
		return bad("cipher_suites")
	}
	for i := 0; i < n; i += 4 {
		c.Suites = append(c.Suites, [2]uint16{uint16(b[i])<<8 | uint16(b[i+1]), uint16(b[i+2])<<8 | uint16(b[i+3])})
	}
	b = b[n:]
	if len(b) < 2 {
		return bad("maximum_name_length")
	}
	c.MaxNameLength = b[0]
	n = int(b[1])
	b = b[2:]
	if n == 0 || len(b) < n {
		return bad("public_name")
	}
	c.PublicName, b = string(b[:n]), b[n:]
	if len(b) < 2 {
		return bad("extensions")
	}
	n = int(b[0])<<8 | int(b[1])
	if len(b) != 2+n {
		return bad("extensions length")
	}
	return c, nil
}

// Generate makes a new X25519 key and its ECHConfig.
func Generate(publicName string, configID uint8, maxNameLen uint8) (*Key, error) {
	if !validName(publicName) {
		return nil, fmt.Errorf("invalid public name %q", publicName)
	}
	priv, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	cfg := MarshalConfig(configID, priv.PublicKey().Bytes(), publicName, maxNameLen)
	return fromParts(priv.Bytes(), cfg, "", time.Now(), true)
}

func fromParts(privRaw, cfg []byte, path string, mod time.Time, adv bool) (*Key, error) {
	parsed, err := ParseConfigList(ConfigListOf(cfg))
	if err != nil {
		return nil, err
	}
	c := parsed[0]
	if c.KEM != KEMX25519 {
		return nil, fmt.Errorf("ECHConfig KEM 0x%04x is not X25519 (0x0020)", c.KEM)
	}
	kem := hpke.DHKEM(ecdh.X25519())
	hk, err := kem.NewPrivateKey(privRaw)
	if err != nil {
		return nil, fmt.Errorf("bad X25519 private key: %v", err)
	}
	if !bytes.Equal(hk.PublicKey().Bytes(), c.PublicKey) {
		return nil, errors.New("private key does not match the public key in ECHCONFIG")
	}
	return &Key{
		Path: path, ConfigID: c.ConfigID, PublicName: c.PublicName, Config: c.Raw,
		PrivateKey: privRaw, Advertise: adv, ModTime: mod, Suites: c.Suites, hpkeKey: hk,
	}, nil
}

// PEM encodes the key in the PEM ECH key file format.
func (k *Key) PEM() ([]byte, error) {
	priv, err := ecdh.X25519().NewPrivateKey(k.PrivateKey)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	_ = pem.Encode(&buf, &pem.Block{Type: "PRIVATE KEY", Bytes: der})
	_ = pem.Encode(&buf, &pem.Block{Type: "ECHCONFIG", Bytes: ConfigListOf(k.Config)})
	return buf.Bytes(), nil
}

// LoadFile reads one PEM ECH key file.
func LoadFile(path string) (*Key, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	var privRaw, cfgList []byte
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		switch b.Type {
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%s: PRIVATE KEY: %v", path, err)
			}
			ek, ok := k.(*ecdh.PrivateKey)
			if !ok || ek.Curve() != ecdh.X25519() {
				return nil, fmt.Errorf("%s: PRIVATE KEY is not an X25519 key", path)
			}
			privRaw = ek.Bytes()
		case "ECHCONFIG":
			cfgList = b.Bytes
		}
	}
	if privRaw == nil || cfgList == nil {
		return nil, fmt.Errorf("%s: not an ECH key file (needs PEM 'PRIVATE KEY' and 'ECHCONFIG' blocks)", path)
	}
	configs, err := ParseConfigList(cfgList)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	if len(configs) != 1 {
		return nil, fmt.Errorf("%s: ECHCONFIG must hold exactly one config, has %d", path, len(configs))
	}
	k, err := fromParts(privRaw, configs[0].Raw, path, st.ModTime(), !strings.HasSuffix(path, suffixRetired))
	if err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	return k, nil
}

// LoadDir loads every key of a key directory (or one key file), newest first. At least one
// advertised key is required, and config ids must be unique.
func LoadDir(dir string) ([]*Key, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("ECH keys: %v", err)
	}
	var paths []string
	if st.IsDir() {
		entries, err := os.ReadDir(dir)
		if err != nil {
			return nil, fmt.Errorf("ECH keys: %v", err)
		}
		for _, e := range entries {
			n := e.Name()
			if !e.IsDir() && (strings.HasSuffix(n, suffixActive) || strings.HasSuffix(n, suffixRetired)) {
				paths = append(paths, filepath.Join(dir, n))
			}
		}
	} else {
		paths = []string{dir}
	}
	var keys []*Key
	seen := map[uint8]string{}
	for _, p := range paths {
		k, err := LoadFile(p)
		if err != nil {
			return nil, fmt.Errorf("ECH keys: %v", err)
		}
		if other, dup := seen[k.ConfigID]; dup {
			return nil, fmt.Errorf("ECH keys: %s and %s share config_id %d", other, p, k.ConfigID)
		}
		seen[k.ConfigID] = p
		keys = append(keys, k)
	}
	sort.SliceStable(keys, func(i, j int) bool {
		if !keys[i].ModTime.Equal(keys[j].ModTime) {
			return keys[i].ModTime.After(keys[j].ModTime)
		}
		return keys[i].Path > keys[j].Path
	})
	adv := 0
	for _, k := range keys {
		if k.Advertise {
			adv++
		}
	}
	if adv == 0 {
		return nil, fmt.Errorf("ECH keys: no advertised key (*%s) in %s", suffixActive, dir)
	}
	return keys, nil
}

// WriteNew generates count keys with config ids unused in dir and writes them there. Each
// new file is newer than everything already present, so it becomes the first advertised.
func WriteNew(dir, publicName string, count int, maxNameLen uint8) ([]*Key, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	used := map[uint8]bool{}
	if existing, err := LoadDir(dir); err == nil {
		for _, k := range existing {
			used[k.ConfigID] = true
		}
	}
	var out []*Key
	for i := 0; i < count; i++ {
		var id uint8
		for tries := 0; ; tries++ {
			var b [1]byte
			_, _ = rand.Read(b[:])
			if !used[b[0]] {
				id = b[0]
				break
			}
			if tries > 1000 {
				return nil, errors.New("no free ECH config_id left (256 keys in use)")
			}
		}
		used[id] = true
		k, err := Generate(publicName, id, maxNameLen)
		if err != nil {
			return nil, err
		}
		data, err := k.PEM()
		if err != nil {
			return nil, err
		}
		name := fmt.Sprintf("%d-%03d%s", time.Now().UnixNano(), id, suffixActive)
		k.Path = filepath.Join(dir, name)
		tmp := k.Path + ".tmp"
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			return nil, err
		}
		if err := os.Rename(tmp, k.Path); err != nil {
			return nil, err
		}
		out = append(out, k)
		time.Sleep(2 * time.Millisecond) // distinct mtimes keep "newest first" well defined
	}
	return out, nil
}

// AdvertisedConfigList is the ECHConfigList to publish (DNS HTTPS ech=, retry configs).
func AdvertisedConfigList(keys []*Key) []byte {
	var cfgs [][]byte
	for _, k := range keys {
		if k.Advertise {
			cfgs = append(cfgs, k.Config)
		}
	}
	return ConfigListOf(cfgs...)
}

// AdvertisedBase64 is AdvertisedConfigList in standard base64 (the HTTPS RR ech= form).
func AdvertisedBase64(keys []*Key) string {
	return base64.StdEncoding.EncodeToString(AdvertisedConfigList(keys))
}

// TLSKeys converts keys for crypto/tls (advertised ones are sent as retry configs).
func TLSKeys(keys []*Key) []tls.EncryptedClientHelloKey {
	out := make([]tls.EncryptedClientHelloKey, 0, len(keys))
	for _, k := range keys {
		out = append(out, tls.EncryptedClientHelloKey{Config: k.Config, PrivateKey: k.PrivateKey, SendAsRetry: k.Advertise})
	}
	return out
}

func validName(n string) bool {
	if len(n) == 0 || len(n) > 253 || !strings.Contains(n, ".") {
		return false
	}
	for _, l := range strings.Split(n, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, r := range l {
			if !(r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
				return false
			}
		}
	}
	return true
}

// ValidName reports whether n is a plausible DNS host name (public names, site names).
func ValidName(n string) bool { return validName(n) }
