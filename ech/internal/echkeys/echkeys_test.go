package echkeys

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestGenerateRoundTrip(t *testing.T) {
	dir := t.TempDir()
	keys, err := WriteNew(dir, "cdn.example", 2, DefaultMaxNameLength)
	if err != nil {
		t.Fatal(err)
	}
	if keys[0].ConfigID == keys[1].ConfigID {
		t.Fatal("config ids must differ")
	}
	loaded, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(loaded) != 2 || loaded[0].ConfigID != keys[1].ConfigID {
		t.Fatalf("want newest first, got %d then %d", loaded[0].ConfigID, loaded[1].ConfigID)
	}
	list := AdvertisedConfigList(loaded)
	cfgs, err := ParseConfigList(list)
	if err != nil || len(cfgs) != 2 {
		t.Fatalf("parse list: %v (%d configs)", err, len(cfgs))
	}
	if cfgs[0].PublicName != "cdn.example" || cfgs[0].KEM != KEMX25519 || len(cfgs[0].Suites) != 2 {
		t.Fatalf("unexpected config %+v", cfgs[0])
	}
	// Retiring a key keeps it loadable but stops advertising it.
	if err := os.Rename(keys[0].Path, keys[0].Path+".retired"); err != nil {
		t.Fatal(err)
	}
	loaded, err = LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfgs, _ = ParseConfigList(AdvertisedConfigList(loaded))
	if len(loaded) != 2 || len(cfgs) != 1 || cfgs[0].ConfigID != keys[1].ConfigID {
		t.Fatalf("retired key still advertised: %d loaded, %d advertised", len(loaded), len(cfgs))
	}
}

func TestBadKeyFiles(t *testing.T) {
	dir := t.TempDir()
	cases := map[string]string{
		"garbage.ech":  "not a pem file\n",
		"nokey.ech":    "-----BEGIN ECHCONFIG-----\nAAA=\n-----END ECHCONFIG-----\n",
		"badlist.ech":  "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VuBCIEIA==\n-----END PRIVATE KEY-----\n",
		"mismatch.ech": "",
	}
	a, _ := Generate("cdn.example", 1, 64)
	b, _ := Generate("cdn.example", 2, 64)
	pa, _ := a.PEM()
	pb, _ := b.PEM()
	// private key of a with config of b
	cases["mismatch.ech"] = string(pa[:strings.Index(string(pa), "-----BEGIN ECHCONFIG")]) + string(pb[strings.Index(string(pb), "-----BEGIN ECHCONFIG"):])
	for name, body := range cases {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadFile(p); err == nil {
			t.Errorf("%s: loaded a bad key file", name)
		} else if strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error is not one line: %q", name, err)
		}
	}
	if _, err := LoadDir(t.TempDir()); err == nil {
		t.Error("empty key dir accepted")
	}
}

func TestParseConfigListMalformed(t *testing.T) {
	k, _ := Generate("cdn.example", 7, 64)
	good := ConfigListOf(k.Config)
	for i := 0; i < len(good); i++ {
		if _, err := ParseConfigList(good[:i]); err == nil {
			t.Fatalf("truncated list of %d bytes accepted", i)
		}
	}
}
