//go:build !linux

package frontlog

import (
	"errors"
	"net"
)

// EnableSavedSYN needs Linux (TCP_SAVE_SYN).
func EnableSavedSYN(net.Listener) error { return errors.New("saved SYN headers need Linux") }

// Transport needs Linux (TCP_SAVED_SYN, TCP_INFO).
func Transport(net.Conn) ([]byte, uint32) { return nil, 0 }

// Listen opens a TCP listener; saveSYN needs Linux.
func Listen(addr string, saveSYN bool) (net.Listener, error) {
	if saveSYN {
		return nil, errors.New("saved SYN headers need Linux")
	}
	return net.Listen("tcp", addr)
}
