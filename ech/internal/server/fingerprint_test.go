package server

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestFingerprintsLogged: every mode logs the outer hello's JA4 and the handshake RTT;
// the shared front door (which terminates TLS) also logs the client's HTTP/2 SETTINGS,
// and the split front, which cannot see inside the relayed TLS, logs null.
func TestFingerprintsLogged(t *testing.T) {
	for _, mode := range []string{"shared", "shared-tls", "split"} {
		t.Run(mode, func(t *testing.T) {
			e := setup(t, mode, nil)
			cfg := e.clientConfig("pineapple-pizza.example", configList(t, e.keyDir), nil)
			cfg.NextProtos = []string{"h2", "http/1.1"}
			tr := &http.Transport{
				DialTLSContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
					d := &tls.Dialer{Config: cfg}
					return d.DialContext(ctx, "tcp", e.addr)
				},
				ForceAttemptHTTP2: true,
			}
			defer tr.CloseIdleConnections()
			cl := &http.Client{Transport: tr, Timeout: 5 * time.Second}
			resp, err := cl.Get("https://pineapple-pizza.example/")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.ProtoMajor != 2 || !strings.Contains(string(body), "pineapple-pizza.example") {
				t.Fatalf("want HTTP/2 and the site's page, got %s %q", resp.Proto, body)
			}
			tr.CloseIdleConnections()
			r := e.records(t, 1)[0]
			if r.JA4 == nil || !strings.HasPrefix(*r.JA4, "t13d") || len(*r.JA4) != 36 {
				t.Fatalf("ja4 = %v", r.JA4)
			}
			if r.TLSGroups == nil || *r.TLSGroups == "" {
				t.Fatalf("tls_groups = %v", r.TLSGroups)
			}
			if r.RTTUS == nil || *r.RTTUS == 0 {
				t.Fatalf("rtt_us = %v", r.RTTUS)
			}
			if mode == "split" {
				if r.H2Settings != nil {
					t.Fatalf("split front cannot see HTTP/2, logged %q", *r.H2Settings)
				}
				return
			}
			// Go's HTTP/2 client: ENABLE_PUSH=0 first, then its window update.
			if r.H2Settings == nil || !strings.HasPrefix(*r.H2Settings, "2:0;") || strings.HasSuffix(*r.H2Settings, "|0") {
				t.Fatalf("h2_settings = %v", r.H2Settings)
			}
		})
	}
}
