package frontlog

import (
	"encoding/json"
	"sync"
	"testing"
	"time"
)

// TestRequestTally: requests are counted per host in first-request order, hosts are
// normalised (port, case, trailing dot), concurrent notes are all counted, and a connection
// without requests leaves both fields null.
func TestRequestTally(t *testing.T) {
	var tl RequestTally
	t0 := time.Now()
	tl.Start(t0)
	tl.Note("A.example:443", t0.Add(5*time.Millisecond))
	var wg sync.WaitGroup
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); tl.Note("a.example", t0.Add(6*time.Millisecond)) }()
	}
	wg.Wait()
	tl.Note("b.example.", t0.Add(40*time.Millisecond))
	var r Record
	tl.Fill(&r)
	if r.Requests == nil || *r.Requests != 12 || len(r.Hosts) != 2 {
		t.Fatalf("got %v %+v", r.Requests, r.Hosts)
	}
	if r.Hosts[0] != (HostRequests{"a.example", 11, 5}) || r.Hosts[1] != (HostRequests{"b.example", 1, 40}) {
		t.Fatalf("hosts %+v", r.Hosts)
	}
	var empty Record
	new(RequestTally).Fill(&empty)
	b, _ := json.Marshal(&empty)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	if v, ok := m["requests"]; !ok || v != nil {
		t.Fatalf("requests without requests: %v", m["requests"])
	}
	if v, ok := m["hosts"]; !ok || v != nil {
		t.Fatalf("hosts without requests: %v", m["hosts"])
	}
}
