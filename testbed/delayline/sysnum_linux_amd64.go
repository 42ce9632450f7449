package delayline

// sysSendmmsg is sendmmsg(2), missing from package syscall's tables on linux/amd64.
const sysSendmmsg = 307
