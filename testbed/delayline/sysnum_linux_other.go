//go:build linux && !amd64 && !arm64

package delayline

// sysSendmmsg < 0: no known number here; frames are sent one sendmsg(2) at a time.
const sysSendmmsg = -1
