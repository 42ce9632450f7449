package loadgen

const sysSetns = 268 // setns(2) on linux/arm64
