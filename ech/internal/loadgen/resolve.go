package loadgen

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"cfrbench/ech/internal/dnshttps"
)

// siteInfo is what DNS says about one site: its ECHConfigList, addresses and ALPN.
type siteInfo struct {
	ech     []byte
	addrs   []netip.Addr
	alpn    []string
	port    uint16
	expires time.Time
}

type cacheEntry struct {
	once sync.Once
	info *siteInfo
	ms   float64
	err  error
}

// resolver resolves HTTPS + A/AAAA for sites, caching answers for their TTL (as a browser
// does), so that steady-state flows measure the transport rather than the DNS server.
type resolver struct {
	client   *dnshttps.Client
	useCache bool
	mu       sync.Mutex
	cache    map[string]*cacheEntry
}

func newResolver(server string, useCache bool) *resolver {
	return &resolver{
		client:   &dnshttps.Client{Server: server, Timeout: 2 * time.Second, Retries: 2},
		useCache: useCache,
		cache:    map[string]*cacheEntry{},
	}
}

func key(site string, family int) string { return fmt.Sprintf("%s/%d", site, family) }

// lookup returns the site's info, the time the lookup took (0 when cached) and whether the
// answer came from the cache.
func (r *resolver) lookup(site string, family int) (*siteInfo, float64, bool, error) {
	if !r.useCache {
		info, ms, err := r.query(site, family)
		return info, ms, false, err
	}
	k := key(site, family)
	for {
		r.mu.Lock()
		e := r.cache[k]
		if e == nil {
			e = &cacheEntry{}
			r.cache[k] = e
		}
		r.mu.Unlock()
		first := false
		e.once.Do(func() {
			first = true
			e.info, e.ms, e.err = r.query(site, family)
		})
		if first {
			if e.err != nil { // do not cache failures
				r.drop(k, e)
			}
			return e.info, e.ms, false, e.err
		}
		if e.err != nil || time.Now().After(e.info.expires) {
			r.drop(k, e)
			continue
		}
		return e.info, 0, true, nil
	}
}

func (r *resolver) drop(k string, e *cacheEntry) {
	r.mu.Lock()
	if r.cache[k] == e {
		delete(r.cache, k)
	}
	r.mu.Unlock()
}

// updateECH replaces the cached ECHConfigList with retry configs from the front door.
func (r *resolver) updateECH(site string, family int, retry []byte) {
	k := key(site, family)
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.cache[k]
	if e == nil || e.info == nil {
		return
	}
	ni := *e.info
	ni.ech = retry
	ne := &cacheEntry{info: &ni}
	ne.once.Do(func() {})
	r.cache[k] = ne
}

func (r *resolver) query(site string, family int) (*siteInfo, float64, error) {
	start := time.Now()
	var httpsAns, addrAns *dnshttps.Answer
	var httpsErr, addrErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		httpsAns, httpsErr = r.client.Query(site, dnshttps.TypeHTTPS)
	}()
	qt := dnshttps.TypeA
	if family == 6 {
		qt = dnshttps.TypeAAAA
	}
	addrAns, addrErr = r.client.Query(site, qt)
	wg.Wait()
	ms := float64(time.Since(start).Microseconds()) / 1000
	if errors.Is(httpsErr, dnshttps.ErrNXDomain) || errors.Is(addrErr, dnshttps.ErrNXDomain) {
		return nil, ms, fmt.Errorf("unknown site %s: %w", site, dnshttps.ErrNXDomain)
	}
	if httpsErr != nil {
		return nil, ms, fmt.Errorf("HTTPS query for %s: %v", site, httpsErr)
	}
	if addrErr != nil {
		return nil, ms, fmt.Errorf("address query for %s: %v", site, addrErr)
	}
	info := &siteInfo{}
	ttl := addrAns.TTL
	for _, h := range httpsAns.HTTPS {
		if h.Priority == 0 { // AliasMode: not used by this testbed
			continue
		}
		if info.ech == nil || len(h.ECH) > 0 {
			info.ech, info.alpn, info.port = h.ECH, h.ALPN, h.Port
		}
		if len(h.ECH) > 0 {
			break
		}
	}
	if len(httpsAns.HTTPS) > 0 {
		ttl = min(ttl, httpsAns.TTL)
	}
	if len(info.ech) == 0 {
		return nil, ms, fmt.Errorf("%s has no HTTPS record with ech= (the front door publishes none)", site)
	}
	info.addrs = addrAns.Addrs
	if len(info.addrs) == 0 {
		return nil, ms, fmt.Errorf("%s has no IPv%d address", site, family)
	}
	if ttl == 0 {
		ttl = 1
	}
	info.expires = time.Now().Add(time.Duration(ttl) * time.Second)
	return info, ms, nil
}
