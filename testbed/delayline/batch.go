//go:build linux

package delayline

import (
	"syscall"
	"unsafe"
)

// Batched socket I/O: recvmmsg(2) and sendmmsg(2) move up to a batch of frames per system
// call. Measured with perf at 1 Gbit/s through a 10 ms line, one recvmsg, one write and the
// Go runtime's entersyscall/exitsyscall per frame were about a third of the forwarder's own
// CPU time (the rest is the kernel stack of the receiving node, which runs inside our
// sends); at subscriber rates that third decided whether the line kept up.

// mmsghdr mirrors struct mmsghdr (<linux/socket.h>): Go pads it to the kernel's layout on
// both 32- and 64-bit platforms.
type mmsghdr struct {
	hdr syscall.Msghdr
	len uint32
}

// oobSize holds one SCM_TIMESTAMPNS control message (16 + 16 bytes on 64-bit) with room.
const oobSize = 64

// rxBatch is a set of receive slots, each with its own frame buffer, link-layer address
// and control buffer, handed to recvmmsg in one call. A frame that is accepted keeps its
// buffer (no copy); the slot then gets a fresh one from the direction's pool.
type rxBatch struct {
	hdrs  []mmsghdr
	iovs  []syscall.Iovec
	names []syscall.RawSockaddrLinklayer
	oob   []byte
	bufs  [][]byte
}

func newRxBatch(slots, bufSize int) *rxBatch {
	b := &rxBatch{
		hdrs:  make([]mmsghdr, slots),
		iovs:  make([]syscall.Iovec, slots),
		names: make([]syscall.RawSockaddrLinklayer, slots),
		oob:   make([]byte, slots*oobSize),
		bufs:  make([][]byte, slots),
	}
	for i := range b.bufs {
		b.setBuf(i, make([]byte, bufSize))
	}
	return b
}

// setBuf gives slot i a new frame buffer (its whole capacity is offered to the kernel).
func (b *rxBatch) setBuf(i int, buf []byte) {
	b.bufs[i] = buf[:cap(buf)]
	b.iovs[i].Base = &b.bufs[i][0]
	b.iovs[i].SetLen(cap(buf))
}

// control returns slot i's control messages as the kernel left them.
func (b *rxBatch) control(i int) []byte {
	n := int(b.hdrs[i].hdr.Controllen)
	return b.oob[i*oobSize : i*oobSize+min(n, oobSize)]
}

// recv reads up to len(slots) frames without blocking. It returns how many slots were
// filled (msg len is the frame's real length, even if MSG_TRUNC cut it), or the errno:
// EAGAIN when nothing was waiting. Non-blocking, so a raw system call: the Go scheduler's
// bookkeeping around a blocking call costs more than the call itself at these rates.
func (b *rxBatch) recv(fd int) (int, syscall.Errno) {
	for i := range b.hdrs {
		h := &b.hdrs[i].hdr
		h.Name = (*byte)(unsafe.Pointer(&b.names[i]))
		h.Namelen = uint32(unsafe.Sizeof(b.names[i]))
		h.Iov = &b.iovs[i]
		h.Iovlen = 1
		h.Control = &b.oob[i*oobSize]
		h.SetControllen(oobSize)
		h.Flags = 0
		b.hdrs[i].len = 0
	}
	r, _, errno := syscall.RawSyscall6(syscall.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&b.hdrs[0])),
		uintptr(len(b.hdrs)), syscall.MSG_DONTWAIT|syscall.MSG_TRUNC, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(r), 0
}

// txBatch sends the frames of one batch with sendmmsg.
type txBatch struct {
	hdrs []mmsghdr
	iovs []syscall.Iovec
}

func newTxBatch(slots int) *txBatch {
	return &txBatch{hdrs: make([]mmsghdr, slots), iovs: make([]syscall.Iovec, slots)}
}

// send writes frames out of fd in order and calls done(i, err) once per frame. A frame the
// kernel refuses (sendmmsg stops at the first failure and reports it only if nothing was
// sent) is retried once as the first of a new call; if it fails again, done gets the error
// and sending resumes after it, so one bad frame never holds back the rest.
func (t *txBatch) send(fd int, frames [][]byte, done func(i int, err syscall.Errno)) {
	for i, f := range frames {
		t.iovs[i].Base = &f[0]
		t.iovs[i].SetLen(len(f))
		t.hdrs[i] = mmsghdr{}
		t.hdrs[i].hdr.Iov = &t.iovs[i]
		t.hdrs[i].hdr.Iovlen = 1
	}
	for off := 0; off < len(frames); {
		r, errno := sendmmsg(fd, t.hdrs[off:len(frames)])
		switch {
		case errno == syscall.EINTR:
			continue
		case errno != 0:
			done(off, errno)
			off++
		default:
			for i := off; i < off+r; i++ {
				done(i, 0)
			}
			off += r
		}
	}
}

// sendmmsg may block briefly if the socket's send buffer is full, so it goes through the
// runtime (syscall.Syscall6), unlike the non-blocking receive.
func sendmmsg(fd int, hdrs []mmsghdr) (int, syscall.Errno) {
	if sysSendmmsg < 0 {
		return sendEach(fd, hdrs)
	}
	r, _, errno := syscall.Syscall6(uintptr(sysSendmmsg), uintptr(fd), uintptr(unsafe.Pointer(&hdrs[0])),
		uintptr(len(hdrs)), 0, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(r), 0
}

// sendEach is sendmmsg's contract built from sendmsg, for architectures whose system call
// number this package does not know.
func sendEach(fd int, hdrs []mmsghdr) (int, syscall.Errno) {
	for i := range hdrs {
		_, _, errno := syscall.Syscall(syscall.SYS_SENDMSG, uintptr(fd), uintptr(unsafe.Pointer(&hdrs[i].hdr)), 0)
		if errno != 0 {
			if i == 0 {
				return 0, errno
			}
			return i, 0
		}
	}
	return len(hdrs), 0
}
