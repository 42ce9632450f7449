//go:build linux

package delayline

import (
	"fmt"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// Receive ring (PACKET_RX_RING, TPACKET_V2): the kernel writes each frame, its length and
// its receive timestamp into a slot of a ring shared with us and flips the slot's status;
// we copy the frame out and hand the slot back. No system call per frame or per batch while
// frames keep coming (ppoll only when the ring is empty), no socket-queue locking and no
// skb kept alive per queued frame. TPACKET_V2, not V3: V3 hands over whole blocks, which
// the kernel retires only when full or after a timeout of at least a millisecond, so a
// lone frame (a ping, a handshake) would wait for it; V2 makes each frame visible at once.

const (
	packetRxRing   = 5  // PACKET_RX_RING, <linux/if_packet.h>
	packetVersion  = 10 // PACKET_VERSION
	tpacketV2      = 1
	tpStatusKernel = 0
	tpStatusUser   = 1
	tpacket2HdrLen = 32 // sizeof(struct tpacket2_hdr)
	// The frame data follows the header, the sockaddr_ll and alignment: the kernel puts the
	// MAC header at TPACKET_ALIGN(32 + 20 + 16) - 14 = 66 for Ethernet.
	ringDataOffset = 80
	ringBlockSize  = 1 << 16 // bytes per block (16 pages: a cheap allocation for the kernel)
	// ringFrames is the ring's capacity: at 1 Gbit/s of 1514-byte frames, 8192 slots absorb
	// ~100 ms of this thread not running before the kernel drops (kernel_drops). Memory:
	// 16 MiB per socket with 2 KiB slots.
	ringFrames = 8192
)

// tpacket2Hdr mirrors struct tpacket2_hdr.
type tpacket2Hdr struct {
	status   uint32
	len      uint32 // the frame's length on the wire
	snaplen  uint32 // bytes of it in the slot
	mac      uint16 // offset of the frame in the slot
	net      uint16
	sec      uint32 // receive time (CLOCK_REALTIME)
	nsec     uint32
	vlanTCI  uint16
	vlanTPID uint16
	_        [4]byte
}

// rxRing is a mapped TPACKET_V2 receive ring, read in order from head.
type rxRing struct {
	mem       []byte
	frameSize int
	head      int
}

// ringFrameSize is the slot size that holds a whole frame of an MTU-mtu link: a power of
// two, at least 2 KiB.
func ringFrameSize(mtu int) int {
	size := 2048
	for size < ringDataOffset+mtu+ethHeaderLen {
		size *= 2
	}
	return size
}

// setupRxRing switches fd to TPACKET_V2 and maps a receive ring on it. Call before bind so
// no frame goes to the ordinary receive queue. On error the socket is left as it was
// (receiving through recvmmsg still works).
func setupRxRing(fd, mtu int) (*rxRing, error) {
	if err := syscall.SetsockoptInt(fd, syscall.SOL_PACKET, packetVersion, tpacketV2); err != nil {
		return nil, fmt.Errorf("PACKET_VERSION TPACKET_V2: %w", err)
	}
	frameSize := ringFrameSize(mtu)
	blockSize := max(ringBlockSize, frameSize)
	perBlock := blockSize / frameSize
	blocks := (ringFrames + perBlock - 1) / perBlock
	req := struct{ blockSize, blockNr, frameSize, frameNr uint32 }{
		uint32(blockSize), uint32(blocks), uint32(frameSize), uint32(blocks * perBlock),
	}
	if _, _, errno := syscall.Syscall6(syscall.SYS_SETSOCKOPT, uintptr(fd), syscall.SOL_PACKET, packetRxRing,
		uintptr(unsafe.Pointer(&req)), unsafe.Sizeof(req), 0); errno != 0 {
		_ = syscall.SetsockoptInt(fd, syscall.SOL_PACKET, packetVersion, 0)
		return nil, fmt.Errorf("PACKET_RX_RING (%d x %d bytes): %w", req.frameNr, frameSize, errno)
	}
	mem, err := syscall.Mmap(fd, 0, blockSize*blocks, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap of the receive ring: %w", err)
	}
	return &rxRing{mem: mem, frameSize: frameSize}, nil
}

func (r *rxRing) hdr(i int) *tpacket2Hdr {
	return (*tpacket2Hdr)(unsafe.Pointer(&r.mem[i*r.frameSize]))
}

// next returns the slot at head if the kernel has handed it to us, else nil. The status is
// read atomically: it is the kernel's release of the slot's contents.
func (r *rxRing) next() *tpacket2Hdr {
	h := r.hdr(r.head)
	if atomic.LoadUint32(&h.status)&tpStatusUser == 0 {
		return nil
	}
	return h
}

// frame returns the bytes of the frame in slot h (at most snaplen of them).
func (r *rxRing) frame(h *tpacket2Hdr) []byte {
	off := r.head*r.frameSize + int(h.mac)
	end := min(off+int(h.snaplen), (r.head+1)*r.frameSize)
	return r.mem[off:end]
}

// pktType is the sll_pkttype of the frame in slot h (PACKET_OUTGOING for our own sends).
func (r *rxRing) pktType(h *tpacket2Hdr) uint8 {
	sll := (*syscall.RawSockaddrLinklayer)(unsafe.Pointer(&r.mem[r.head*r.frameSize+tpacket2HdrLen]))
	return sll.Pkttype
}

// release hands slot h back to the kernel and advances head.
func (r *rxRing) release(h *tpacket2Hdr) {
	atomic.StoreUint32(&h.status, tpStatusKernel)
	r.head = (r.head + 1) % (len(r.mem) / r.frameSize)
}
