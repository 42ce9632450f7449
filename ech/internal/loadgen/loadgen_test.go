package loadgen

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// decodeUnique decodes one JSON object, failing on a duplicated key (json.Unmarshal into a
// map would silently keep the last one).
func decodeUnique(t *testing.T, line []byte) map[string]any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not an object: %s", line)
	}
	out := map[string]any{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("%v in %s", err, line)
		}
		k := tok.(string)
		var v any
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("%v in %s", err, line)
		}
		if _, dup := out[k]; dup {
			t.Fatalf("duplicate key %q in %s", k, line)
		}
		out[k] = v
	}
	if _, err := dec.Token(); err != nil {
		t.Fatalf("%v in %s", err, line)
	}
	return out
}

func TestWorkloadExtraFieldsCopiedThrough(t *testing.T) {
	wl := `{"t": 0.5, "subscriber": "alice", "source": "127.0.0.1", "site": "a.example", "path": "/page/3", "subresources": true, "household": "h7", "device": "d7-2", "session_id": "s-19", "family": 6, "zz_unknown": {"n": [1, 2.50, null], "s": "x y"}}
{"t": 1, "subscriber": "bob", "site": "b.example"}
`
	items, err := ParseWorkload(strings.NewReader(wl), "wl")
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 2 || items[0].Site != "a.example" || !items[0].Subresources || items[0].Path != "/page/3" {
		t.Fatalf("known fields not parsed: %+v", items)
	}
	if items[1].Extra != nil {
		t.Fatalf("record without extra fields got %s", items[1].Extra)
	}
	errText := "boom"
	tr := Truth{TS: 1234.5, Subscriber: "alice", FlowID: "r-1", Site: "a.example", Attempt: 1,
		Error: &errText, extra: items[0].Extra}
	line, err := tr.MarshalLine()
	if err != nil {
		t.Fatal(err)
	}
	got := decodeUnique(t, line)
	want := map[string]string{"household": `"h7"`, "device": `"d7-2"`, "session_id": `"s-19"`, "family": `6`,
		"zz_unknown": `{"n":[1,2.50,null],"s":"x y"}`, "ts": `1234.5`, "flow_id": `"r-1"`, "error": `"boom"`}
	for k, v := range want {
		b, _ := json.Marshal(got[k])
		if k == "zz_unknown" {
			// Compare the raw text: the value is copied, not re-encoded (2.50 stays 2.50).
			if !bytes.Contains(line, []byte(`"zz_unknown":`+v)) {
				t.Fatalf("zz_unknown not copied verbatim: %s", line)
			}
			continue
		}
		if string(b) != v {
			t.Fatalf("%s = %s, want %s (line %s)", k, b, v, line)
		}
	}
	for _, k := range []string{"t", "source", "subresources"} {
		if _, ok := got[k]; ok {
			t.Fatalf("workload's own field %q copied: %s", k, line)
		}
	}
	// Without extras the line is exactly json.Marshal's.
	tr.extra = nil
	plain, _ := tr.MarshalLine()
	ref, _ := json.Marshal(&tr)
	if !bytes.Equal(plain, ref) {
		t.Fatalf("%s != %s", plain, ref)
	}
}

func TestWorkloadFieldCollisionGeneratorWins(t *testing.T) {
	wl := `{"t": 0, "subscriber": "alice", "site": "a.example", "ts": 99, "flow_id": "mine", "local_addr": "10.9.9.9", "client_random": "00", "household": "h1", "SITE": "ignored-too"}`
	items, err := ParseWorkload(strings.NewReader(wl), "wl")
	if err != nil {
		t.Fatal(err)
	}
	tr := Truth{TS: 1700000000.25, FlowID: "r-7", LocalAddr: "127.0.0.1", Subscriber: "alice", Site: "a.example", extra: items[0].Extra}
	line, err := tr.MarshalLine()
	if err != nil {
		t.Fatal(err)
	}
	got := decodeUnique(t, line)
	if got["ts"] != json.Number("1700000000.25") || got["flow_id"] != "r-7" || got["local_addr"] != "127.0.0.1" ||
		got["client_random"] != nil || got["household"] != "h1" {
		t.Fatalf("workload field overrode the generator's: %s", line)
	}
	if _, ok := got["SITE"]; ok {
		t.Fatalf("SITE (decoded into site, case-insensitively) copied as extra: %s", line)
	}
	if string(items[0].Extra) != `"household":"h1"` {
		t.Fatalf("extra = %s", items[0].Extra)
	}
}

func TestWorkloadBadLinesStillRejected(t *testing.T) {
	for _, wl := range []string{
		`{"t": "soon", "subscriber": "a", "site": "a.example"}`,
		`{"t": 0, "subscriber": "a", "site": "a.example", "subresources": "yes"}`,
		`{"t": 0, "subscriber": "a", "site": "a.example"`,
		`{"t": 0, "subscriber": "a"}`,
	} {
		if _, err := ParseWorkload(strings.NewReader(wl+"\n"), "wl"); err == nil {
			t.Errorf("accepted %s", wl)
		}
	}
}
