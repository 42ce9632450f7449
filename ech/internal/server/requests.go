package server

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

type connStateKey struct{}

// withConnState (http.Server.ConnContext) puts the connection's log state in the context of
// its requests, so noteRequests can count them into the connection's log line.
func withConnState(ctx context.Context, c net.Conn) context.Context {
	var st *connState
	switch v := c.(type) {
	case *h2Sniff:
		st = v.st
	case *tls.Conn:
		st = stateOf(v.NetConn())
	}
	if st == nil {
		return ctx
	}
	return context.WithValue(ctx, connStateKey{}, st)
}

// noteRequests records each request's host (:authority or Host) in its connection's log
// state (frontlog.Record.Requests and Hosts) before serving it.
func noteRequests(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if st, ok := r.Context().Value(connStateKey{}).(*connState); ok {
			st.reqs.Note(r.Host, time.Now())
		}
		h.ServeHTTP(w, r)
	})
}

// certGroup is the group of numbered site names sharing name's certificate (CertGroup), nil
// for one certificate per name (CertGroup <= 1, or a name outside the numbered sites).
func (s *TLSServer) certGroup(name string) []string {
	if s.CertGroup <= 1 {
		return nil
	}
	num, ok := strings.CutPrefix(strings.ToLower(name), "site-")
	num, ok2 := strings.CutSuffix(num, ".example")
	i, err := strconv.Atoi(num)
	if !ok || !ok2 || err != nil || i < 1 {
		return nil
	}
	first := (i-1)/s.CertGroup*s.CertGroup + 1
	var out []string
	for j := first; j < first+s.CertGroup; j++ {
		if n := SiteName(j); s.Sites.Has(n) {
			out = append(out, n)
		}
	}
	return out
}
