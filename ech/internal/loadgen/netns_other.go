//go:build !(linux && (amd64 || arm64))

package loadgen

import (
	"context"
	"errors"
	"net"
)

// dialInNetns needs setns(2), wired up for linux/amd64 and linux/arm64 only.
func dialInNetns(context.Context, *net.Dialer, string, string) (net.Conn, error) {
	return nil, errors.New("profile netns: dialing from another network namespace needs linux/amd64 or linux/arm64")
}
