package server

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// Limits on what one request may ask for.
const (
	MaxBytes     = 1 << 30
	MaxPageRes   = 1000
	ResourceSize = 1024
)

var filler = func() []byte {
	b := make([]byte, 64<<10)
	for i := range b {
		b[i] = "abcdefghijklmnopqrstuvwxyz0123456789"[i%36]
	}
	return b
}()

// Handler serves the testbed endpoints: "/" a small page, "/bytes/N" N bytes, "/page/N" an
// HTML page referencing N sub-resources "/res/i", and "/res/i" one sub-resource.
func Handler(mode string) http.Handler {
	mux := http.NewServeMux()
	site := func(r *http.Request) string {
		if r.TLS != nil && r.TLS.ServerName != "" {
			return r.TLS.ServerName
		}
		return r.Host
	}
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("X-Served-By", mode)
		fmt.Fprintf(w, "<!doctype html><html><head><title>%s</title></head><body><p>site %s served by %s over %s</p></body></html>\n",
			site(r), site(r), mode, r.Proto)
	})
	mux.HandleFunc("GET /bytes/{n}", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.ParseInt(r.PathValue("n"), 10, 64)
		if err != nil || n < 0 || n > MaxBytes {
			http.Error(w, fmt.Sprintf("N must be 0..%d", MaxBytes), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		w.Header().Set("X-Served-By", mode)
		for n > 0 {
			k := min(n, int64(len(filler)))
			if _, err := w.Write(filler[:k]); err != nil {
				return
			}
			n -= k
		}
	})
	mux.HandleFunc("GET /page/{n}", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.PathValue("n"))
		if err != nil || n < 0 || n > MaxPageRes {
			http.Error(w, fmt.Sprintf("N must be 0..%d", MaxPageRes), http.StatusBadRequest)
			return
		}
		var b strings.Builder
		fmt.Fprintf(&b, "<!doctype html><html><head><title>%s</title></head><body>\n", site(r))
		for i := 0; i < n; i++ {
			fmt.Fprintf(&b, "<img src=\"/res/%d\">\n", i)
		}
		b.WriteString("</body></html>\n")
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("X-Served-By", mode)
		_, _ = w.Write([]byte(b.String()))
	})
	mux.HandleFunc("GET /res/{i}", func(w http.ResponseWriter, r *http.Request) {
		if _, err := strconv.Atoi(r.PathValue("i")); err != nil {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(ResourceSize))
		_, _ = w.Write(filler[:ResourceSize])
	})
	return mux
}

// PageResources extracts the sub-resource paths a /page/N body references.
func PageResources(body []byte) []string {
	var out []string
	s := string(body)
	for {
		i := strings.Index(s, "src=\"")
		if i < 0 {
			return out
		}
		s = s[i+5:]
		j := strings.IndexByte(s, '"')
		if j < 0 {
			return out
		}
		out = append(out, s[:j])
		s = s[j+1:]
	}
}
