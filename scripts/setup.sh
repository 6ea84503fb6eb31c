#!/usr/bin/env bash
# Everything osvirt needs on a Debian 12 host with Node 20, as root:
# Debian packages, npm packages, CRIU >= 4.2 (scripts/install-criu.sh), the
# TypeScript build and the native helper. Idempotent: a second run only
# checks and rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }

[[ $EUID -eq 0 ]] || die "run as root: osvirt creates namespaces, cgroups, mounts and network devices"
command -v node >/dev/null || die "Node.js 20 is required (node not found)"
node_major=$(node -p 'process.versions.node.split(".")[0]')
(( node_major >= 20 )) || die "Node.js >= 20 is required (found $(node -v))"

# Debian packages: busybox-static for the busybox template, iproute2 for
# networking, iptables for CRIU's network locking, util-linux for nsenter,
# procps for pgrep, libcap2-bin for file capabilities, gcc/make for the helper,
# libseccomp-dev (and its runtime libseccomp2) for the helper's seccomp filter,
# protobuf-c-compiler (protoc-c) and libprotobuf-c-dev for the helper's protocol
# (proto/osvirt/helper/v1/helper.proto, and CRIU's rpc.proto),
# clang-format for scripts/check-format-c.sh,
# clang/libbpf-dev/bpftool for the cgroup BPF address filter, python3-grpcio and
# protoc with the grpc plugin for the Python driver and client, and lxc, runc
# and iperf3 for the benchmarks' anchors, mmdebstrap for the debian template,
# nftables for the default bridge's NAT and published ports, attr (setfattr) for
# the overlay whiteouts of unpacked image layers, and docker-registry, skopeo and
# umoci for the image tests (a real registry, images pushed to it), and podman as
# the image bench's anchor.
PACKAGES=(busybox-static iproute2 iptables util-linux procps libcap2-bin gcc make libc6-dev libseccomp-dev libseccomp2 clang-format
  protobuf-c-compiler libprotobuf-c-dev libprotobuf-c1
  ca-certificates openssl clang libbpf-dev bpftool
  python3-grpcio python3-protobuf protobuf-compiler protobuf-compiler-grpc libprotobuf-dev grpc-proto
  lxc runc iperf3 mmdebstrap nftables attr docker-registry skopeo umoci podman)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if (( ${#missing[@]} )); then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  log "Debian packages present"
fi

if [[ ! -d node_modules || package-lock.json -nt node_modules/.package-lock.json ]]; then
  log "installing npm packages"
  npm ci --no-audit --no-fund --loglevel=error
else
  log "npm packages present"
fi

# Members of the osvirt group may use the admin socket (like libvirt's group).
getent group osvirt >/dev/null || groupadd --system osvirt

log "CRIU"
bash scripts/install-criu.sh

log "building TypeScript and the native helper"
npx tsc -p tsconfig.json
make -s -C native
make -s -C drivers/common/ipfilter
bash drivers/python-process/build.sh
bash clients/python/generate.sh

log "done: start the daemon with 'node bin/osvirtd' (or 'npm run daemon')"
