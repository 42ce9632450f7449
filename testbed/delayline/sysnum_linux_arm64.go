package delayline

// sysSendmmsg is sendmmsg(2), missing from package syscall's tables on linux/arm64.
const sysSendmmsg = 269
