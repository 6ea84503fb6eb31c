#!/usr/bin/env bash
# Install a CRIU >= 4.2 that works on this host, for osvirt's checkpoint/restore.
#
# Order of preference (see /work/shared/HOST-FACTS.md, "CRIU"):
#   1. a system `criu` >= 4.2 whose `criu check` passes: used as is, nothing is written;
#   2. an earlier install of ours in $PREFIX that still works: nothing is downloaded;
#   3. otherwise CRIU 4.2.x and the libraries it needs (including a newer glibc) are fetched
#      from Debian unstable into the private prefix, and $PREFIX/bin/criu runs them through
#      the prefix's own dynamic loader. The host's apt sources, lists and packages are never
#      touched by sid: the sid source lives in a temporary apt config with private state.
#
# Idempotent; safe to run again. Needs root and Debian's package mirror.
#
# Environment:
#   OSVIRT_CRIU_PREFIX   install prefix (default /opt/osvirt/criu)
#   OSVIRT_CRIU_MIRROR   Debian mirror to fetch sid from (default: the host's own Debian mirror)
# Options:
#   --force              reinstall into the prefix even if a working criu is found
set -euo pipefail

PREFIX="${OSVIRT_CRIU_PREFIX:-/opt/osvirt/criu}"
MIN_VERSION="4.2"
# The libraries criu 4.2 links against (directly or via libnftables/gnutls), plus the sid glibc
# they were built for. The loader check below proves nothing is resolved from the host.
SID_PACKAGES=(criu libcompel1 libnet9 libnl-3-200 libc6 libgnutls30t64 libnftables1 libprotobuf-c1
  libbsd0 libuuid1 libnftnl11 libmnl0 libjansson4 libxtables12 libidn2-0 libunistring5 libtasn1-6
  libnettle8t64 libhogweed6t64 libgmp10 libp11-kit0 libffi8 libmd0 libedit2 libtinfo6 libgcc-s1)
APT_LOCK_TIMEOUT=600

FORCE=0
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,18p' "$0" | cut -c3-; exit 0 ;;
    *) echo "install-criu: unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done

log() { printf 'install-criu: %s\n' "$*"; }
die() { printf 'install-criu: ERROR: %s\n' "$*" >&2; exit 1; }

WORK=""
cleanup() { if [[ -n "$WORK" ]]; then rm -rf -- "$WORK"; fi; }
trap cleanup EXIT

[[ $EUID -eq 0 ]] || die "must run as root (criu needs CAP_SYS_ADMIN and this writes to $PREFIX)"
command -v apt-get >/dev/null && command -v dpkg >/dev/null \
  || die "this installer needs a Debian-like system with apt-get and dpkg"

# Serialize concurrent runs (CI jobs on one machine).
mkdir -p /run/lock
exec 9>/run/lock/osvirt-install-criu.lock
flock -w 900 9 || die "another install-criu.sh is still running (lock /run/lock/osvirt-install-criu.lock)"

# --- helpers ---------------------------------------------------------------------------------

# "Version: 4.2.1" -> "4.2.1"
criu_version() { "$1" --version 2>/dev/null | sed -n 's/^Version:[[:space:]]*//p' | head -n1; }

version_ge() { dpkg --compare-versions "$1" ge "$2"; }

# usable_criu BIN: succeeds when BIN is >= MIN_VERSION and `BIN check` passes.
# Sets CHECK_VERSION and CHECK_REASON for reporting.
CHECK_VERSION=""; CHECK_REASON=""
usable_criu() {
  local bin="$1" out
  CHECK_VERSION="$(criu_version "$bin" || true)"
  if [[ -z "$CHECK_VERSION" ]]; then CHECK_REASON="'$bin --version' did not report a version"; return 1; fi
  if ! version_ge "$CHECK_VERSION" "$MIN_VERSION"; then
    CHECK_REASON="criu $CHECK_VERSION is older than $MIN_VERSION"; return 1
  fi
  if ! out="$("$bin" check 2>&1)"; then
    CHECK_REASON="'$bin check' failed: $(printf '%s' "$out" | grep -v 'RLIMIT_NOFILE' | tail -n 3 | tr '\n' ' ')"
    return 1
  fi
  return 0
}

# amd64 -> x86_64-linux-gnu + its loader name.
ARCH="$(dpkg --print-architecture)"
case "$ARCH" in
  amd64) TRIPLET=x86_64-linux-gnu; LDSO_NAME=ld-linux-x86-64.so.2 ;;
  arm64) TRIPLET=aarch64-linux-gnu; LDSO_NAME=ld-linux-aarch64.so.1 ;;
  *) die "architecture $ARCH is not supported by this installer (amd64, arm64)" ;;
esac

# --- host dependencies -------------------------------------------------------------------------

# criu runs iptables-restore to lock the network of a dumped net namespace.
if ! command -v iptables-restore >/dev/null; then
  log "installing host dependency: iptables"
  apt_log="$(mktemp)"
  if ! DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=$APT_LOCK_TIMEOUT \
      install --no-install-recommends iptables >"$apt_log" 2>&1; then
    apt-get -q -o DPkg::Lock::Timeout=$APT_LOCK_TIMEOUT update >>"$apt_log" 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=$APT_LOCK_TIMEOUT \
      install --no-install-recommends iptables >>"$apt_log" 2>&1 \
      || { tail -n 20 "$apt_log" >&2; rm -f "$apt_log"; die "could not install iptables from the host's apt sources"; }
  fi
  rm -f "$apt_log"
fi

# --- 1. a system criu -----------------------------------------------------------------------------

WRAPPER="$PREFIX/bin/criu"
if [[ $FORCE -eq 0 ]]; then
  sys_criu="$(command -v criu || true)"
  if [[ -n "$sys_criu" && "$(readlink -f "$sys_criu")" != "$(readlink -f "$WRAPPER" 2>/dev/null || echo "$WRAPPER")" ]]; then
    if usable_criu "$sys_criu"; then
      log "system criu $CHECK_VERSION at $sys_criu passes 'criu check'; nothing to install"
      exit 0
    fi
    log "not using system criu at $sys_criu: $CHECK_REASON"
  fi

  # --- 2. our earlier install -------------------------------------------------------------------
  if [[ -x "$WRAPPER" ]]; then
    if usable_criu "$WRAPPER"; then
      log "criu $CHECK_VERSION already installed at $WRAPPER and 'criu check' passes"
      exit 0
    fi
    log "reinstalling: existing $WRAPPER is not usable: $CHECK_REASON"
  fi
fi

# --- 3. fetch from Debian unstable ----------------------------------------------------------------

# Reuse the host's Debian mirror (one-line .list or deb822 .sources): the first `deb` entry that
# serves the host's release suite from a non-security archive.
find_debian_mirror() {
  local codename files=()
  codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
  [[ -f /etc/apt/sources.list ]] && files+=(/etc/apt/sources.list)
  for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [[ -f "$f" ]] && files+=("$f")
  done
  local f
  for f in "${files[@]}"; do
    case "$f" in
      *.sources)
        # deb822: blank-line separated stanzas with Types/URIs/Suites/Enabled fields.
        awk -v want="$codename" '
          function flush() {
            if (types ~ /(^| )deb( |$)/ && enabled != "no" && uri != "" && uri !~ /security/ &&
                (want == "" || (" " suites " ") ~ (" " want " "))) { print uri; found = 1; exit }
            types = ""; uris = ""; suites = ""; enabled = ""; uri = ""
          }
          /^[[:space:]]*#/ { next }
          /^[[:space:]]*$/ { flush(); next }
          {
            key = tolower($1); sub(/:$/, "", key); $1 = ""; sub(/^[[:space:]]+/, "")
            if (key == "types") types = $0
            else if (key == "uris") { split($0, u, /[[:space:]]+/); uri = u[1] }
            else if (key == "suites") suites = $0
            else if (key == "enabled") enabled = tolower($0)
          }
          END { if (!found) flush() }' "$f"
        ;;
      *)
        awk -v want="$codename" '
          $1 == "deb" {
            i = 2
            if ($i ~ /^\[/) { while ($i !~ /\]$/ && i < NF) i++; i++ }
            uri = $(i); suite = $(i + 1)
            if (uri !~ /security/ && (want == "" || suite == want)) { print uri; exit }
          }' "$f"
        ;;
    esac
  done | head -n1
}

MIRROR="${OSVIRT_CRIU_MIRROR:-$(find_debian_mirror)}"
# Only the host's own configuration names the mirror: no built-in host.
[[ -n "$MIRROR" ]] || die "no Debian mirror found in the host's apt sources (/etc/apt/sources.list, /etc/apt/sources.list.d); add one, or set OSVIRT_CRIU_MIRROR to the Debian mirror to use"
MIRROR="${MIRROR%/}"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
[[ -f "$KEYRING" ]] || die "$KEYRING is missing: install the debian-archive-keyring package"

WORK="$(mktemp -d /tmp/osvirt-install-criu.XXXXXX)"
APTLOG="$WORK/apt.log"
mkdir -p "$WORK/etc/sources.list.d" "$WORK/etc/preferences.d" "$WORK/lists/partial" \
  "$WORK/cache/archives/partial" "$WORK/debs"
echo "deb [signed-by=$KEYRING] $MIRROR sid main" >"$WORK/etc/sid.list"
# A private apt configuration: only the sid source, private lists and cache, no host pinning.
APT_OPTS=(-q
  -o "Dir::Etc::sourcelist=$WORK/etc/sid.list"
  -o "Dir::Etc::sourceparts=$WORK/etc/sources.list.d"
  -o "Dir::Etc::preferences=$WORK/etc/preferences"
  -o "Dir::Etc::preferencesparts=$WORK/etc/preferences.d"
  -o "Dir::State::lists=$WORK/lists"
  -o "Dir::Cache=$WORK/cache"
  -o "APT::Get::List-Cleanup=0")

apt_fail() { tail -n 20 "$APTLOG" >&2 || true; die "$1"; }

log "fetching the package index of Debian unstable from $MIRROR (private apt state, host sources untouched)"
apt-get "${APT_OPTS[@]}" update >"$APTLOG" 2>&1 \
  || apt_fail "apt-get update for sid failed (mirror $MIRROR; set OSVIRT_CRIU_MIRROR to another Debian mirror)"

candidate="$(apt-cache "${APT_OPTS[@]}" show criu 2>>"$APTLOG" | sed -n 's/^Version:[[:space:]]*//p' | sort -V | tail -n1)"
[[ -n "$candidate" ]] || apt_fail "criu is not in Debian unstable on $MIRROR"
version_ge "$candidate" "$MIN_VERSION" \
  || die "Debian unstable on $MIRROR only has criu $candidate (need >= $MIN_VERSION); a snapshot mirror may be too old: set OSVIRT_CRIU_MIRROR to a current Debian mirror"

log "downloading criu $candidate and ${#SID_PACKAGES[@]} packages from sid"
# apt drops privileges to _apt for downloads; let it write there.
if id _apt >/dev/null 2>&1; then chown _apt "$WORK/debs"; fi
(cd "$WORK/debs" && apt-get "${APT_OPTS[@]}" download "${SID_PACKAGES[@]}") >>"$APTLOG" 2>&1 \
  || apt_fail "apt-get download from sid failed"

STAGE="$PREFIX.new.$$"
rm -rf -- "$STAGE"
mkdir -p "$STAGE/bin"
log "extracting into $PREFIX"
for deb in "$WORK"/debs/*.deb; do
  dpkg -x "$deb" "$STAGE" || die "dpkg -x $deb failed"
done
ls "$WORK"/debs/*.deb | xargs -n1 basename >"$STAGE/PACKAGES"

# The wrapper finds its prefix from its own path, so the staged tree can be verified before it
# is moved into place. `exec` keeps pid and file descriptors (criu swrk <fd> relies on that).
cat >"$STAGE/bin/criu" <<EOF
#!/bin/sh
# osvirt: run CRIU from Debian unstable with its own glibc and libraries (scripts/install-criu.sh).
self=\$(readlink -f -- "\$0") || exit 127
prefix=\${self%/bin/criu}
exec "\$prefix/usr/lib/$TRIPLET/$LDSO_NAME" \\
  --library-path "\$prefix/usr/lib/$TRIPLET:\$prefix/lib/$TRIPLET" \\
  "\$prefix/usr/sbin/criu" "\$@"
EOF
chmod 0755 "$STAGE/bin/criu"

# Every library must come from the prefix: one from the host (glibc 2.36) would break criu.
ldso="$STAGE/usr/lib/$TRIPLET/$LDSO_NAME"
[[ -x "$ldso" ]] || die "sid libc6 did not provide $LDSO_NAME"
if ! libs="$("$ldso" --library-path "$STAGE/usr/lib/$TRIPLET:$STAGE/lib/$TRIPLET" --list "$STAGE/usr/sbin/criu" 2>&1)"; then
  printf '%s\n' "$libs" >&2; die "the sid criu binary cannot be loaded"
fi
if leaked="$(printf '%s\n' "$libs" | grep '=>' | grep -v -F "$STAGE/" | grep -v 'linux-vdso')"; then
  printf '%s\n' "$leaked" >&2
  die "these libraries are not in the prefix (add their sid packages to SID_PACKAGES): see above"
fi

log "verifying: criu --version and criu check"
if ! usable_criu "$STAGE/bin/criu"; then
  rm -rf -- "$STAGE"
  die "the downloaded criu does not work on this host: $CHECK_REASON"
fi

# Swap the new tree in (a working old one is only removed once the new one is verified).
if [[ -e "$PREFIX" ]]; then
  rm -rf -- "$PREFIX.old"
  mv -- "$PREFIX" "$PREFIX.old"
fi
mv -- "$STAGE" "$PREFIX"
rm -rf -- "$PREFIX.old"

usable_criu "$WRAPPER" || die "installed criu at $WRAPPER does not work: $CHECK_REASON"
log "installed criu $CHECK_VERSION at $WRAPPER ('criu check' passes)"
