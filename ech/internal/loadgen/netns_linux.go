//go:build linux && (amd64 || arm64)

package loadgen

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"syscall"
)

// dialInNetns dials from the network namespace at path: the socket is created on an OS
// thread moved into that namespace (setns), and a socket keeps its namespace for life.
// The thread stays locked and exits with the goroutine, so no other goroutine ever runs
// in the foreign namespace.
func dialInNetns(ctx context.Context, d *net.Dialer, path, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: see above
		fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err != nil {
			ch <- result{nil, fmt.Errorf("netns %s: %v", path, err)}
			return
		}
		_, _, e := syscall.RawSyscall(sysSetns, uintptr(fd), syscall.CLONE_NEWNET, 0)
		_ = syscall.Close(fd)
		if e != 0 {
			ch <- result{nil, fmt.Errorf("setns %s: %v", path, e)}
			return
		}
		c, err := d.DialContext(ctx, "tcp", addr)
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}
