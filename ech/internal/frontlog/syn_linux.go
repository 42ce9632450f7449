//go:build linux

package frontlog

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"unsafe"
)

// Linux socket options (include/uapi/linux/tcp.h): not all are in package syscall.
const (
	tcpSaveSYN  = 27
	tcpSavedSYN = 28
)

// Listen opens a TCP listener; with saveSYN it keeps each client's SYN headers
// (EnableSavedSYN). Multipath TCP is then turned off on the listener: Go enables it by
// default on Linux, and an MPTCP socket refuses TCP_SAVE_SYN (ENOPROTOOPT); plain TCP
// clients, all the testbed has, are served the same either way.
func Listen(addr string, saveSYN bool) (net.Listener, error) {
	var lc net.ListenConfig
	if saveSYN {
		lc.SetMultipathTCP(false)
	}
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil || !saveSYN {
		return ln, err
	}
	if err := EnableSavedSYN(ln); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("saving SYN headers: %v", err)
	}
	return ln, nil
}

// EnableSavedSYN asks the kernel to keep each accepted connection's SYN headers
// (TCP_SAVE_SYN on the listening socket), for SavedSYN to read after accept. Cost: the
// kernel keeps about 100 bytes per connection until they are read (read once, then freed).
func EnableSavedSYN(ln net.Listener) error {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return errors.New("not a TCP listener")
	}
	rc, err := tl.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpSaveSYN, 1)
	}); err != nil {
		return err
	}
	return serr
}

// Transport reads what the kernel knows about an accepted connection: the saved SYN
// headers (nil if the listener did not save them) and the smoothed RTT in microseconds
// from TCP_INFO, which right after accept is the handshake RTT (SYN-ACK to ACK), the
// path's round trip as the server measures it (0 if unavailable).
func Transport(c net.Conn) (syn []byte, rttUS uint32) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil, 0
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil, 0
	}
	_ = rc.Control(func(fd uintptr) {
		buf := make([]byte, 512)
		n := uint32(len(buf))
		_, _, e := syscall.Syscall6(syscall.SYS_GETSOCKOPT, fd, syscall.IPPROTO_TCP, tcpSavedSYN,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
		if e == 0 && n > 0 && int(n) <= len(buf) {
			syn = buf[:n]
		}
		var info syscall.TCPInfo
		il := uint32(unsafe.Sizeof(info))
		_, _, e = syscall.Syscall6(syscall.SYS_GETSOCKOPT, fd, syscall.IPPROTO_TCP, syscall.TCP_INFO,
			uintptr(unsafe.Pointer(&info)), uintptr(unsafe.Pointer(&il)), 0)
		if e == 0 {
			rttUS = info.Rtt
		}
	})
	return syn, rttUS
}
