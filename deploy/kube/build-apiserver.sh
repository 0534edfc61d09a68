#!/usr/bin/env bash
# Build kube-apiserver v1.20.2 from Debian bookworm's source package and cache the binary OUTSIDE the repo.
#
#   deploy/kube/build-apiserver.sh        build once (4 to 10 minutes on 2 cores, ~1.3 GB RAM), then a no-op
#
# No package registry ships a kube-apiserver binary, so the test fixture (tests/fixtures/kube.py) uses this build.
# The binary lands in ${XDG_CACHE_HOME:-$HOME/.cache}/westworld/kube-apiserver-1.20.2 (override the directory with
# WESTWORLD_KUBE_CACHE). /etc/apt is never modified: the deb-src line lives in a private sources list.
# Also installs etcd (Debian etcd-server 3.4), which the fixture starts next to the apiserver.
set -euo pipefail

VERSION=1.20.2
CACHE_DIR=${WESTWORLD_KUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/westworld}
TARGET="$CACHE_DIR/kube-apiserver-$VERSION"
MIRROR=${WESTWORLD_DEBIAN_MIRROR:-http://deb.debian.org/debian}

say() { printf '[build-apiserver %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    $SUDO apt-get -o DPkg::Lock::Timeout=900 update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# etcd is needed at test time even when the apiserver is cached.
apt_install etcd-server

if [ -x "$TARGET" ]; then
  say "kube-apiserver $VERSION already cached at $TARGET"
  exit 0
fi

START=$(date +%s)
apt_install golang-go rsync make dpkg-dev ca-certificates golang-github-modern-go-reflect2-dev

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ww-kube-build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
say "work directory $WORK"

# A private apt configuration with a deb-src line, so /etc/apt stays untouched.
mkdir -p "$WORK/apt/lists/partial" "$WORK/apt/archives/partial"
cat >"$WORK/apt/sources.list" <<SRC
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR bookworm main
SRC
APT_OPTS=(
  -o "Dir::Etc::SourceList=$WORK/apt/sources.list"
  -o "Dir::Etc::SourceParts=-"
  -o "Dir::State::Lists=$WORK/apt/lists"
  -o "Dir::Cache::Archives=$WORK/apt/archives"
  -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache="
  -o "APT::Sandbox::User=root"
)
say "fetching the bookworm source index from $MIRROR"
apt-get "${APT_OPTS[@]}" update -qq
say "downloading the kubernetes source package"
# bookworm's package is 1.20.5+really1.20.2: the 1.20.2 tree under a higher version number.
(cd "$WORK" && apt-get "${APT_OPTS[@]}" source --download-only -qq kubernetes)
DSC=$(ls "$WORK"/kubernetes_*.dsc | head -n1)
say "unpacking $(basename "$DSC")"
(cd "$WORK" && dpkg-source --no-check -x "$DSC" src >/dev/null)

# Kubernetes 1.20 vendors modern-go/reflect2 1.0.1, whose map iteration reads garbage with Go >= 1.18 (the
# apiserver dies with SIGSEGV in json-iterator's sortKeysMapEncoder, e.g. in ResourceQuota admission). Debian's
# reflect2 1.0.2 (the upstream fix, same API) replaces it.
REFLECT2=/usr/share/gocode/src/github.com/modern-go/reflect2
say "replacing vendored modern-go/reflect2 1.0.1 with Debian's 1.0.2 (Go >= 1.18 compatibility)"
rm -rf "$WORK/src/vendor/github.com/modern-go/reflect2"
mkdir -p "$WORK/src/vendor/github.com/modern-go/reflect2"
find "$REFLECT2" -maxdepth 1 -type f \( -name '*.go' -o -name '*.s' \) ! -name '*_test.go' -exec cp {} "$WORK/src/vendor/github.com/modern-go/reflect2/" \;

say "building cmd/kube-apiserver with make (CGO_ENABLED=0; 4 to 10 minutes on 2 cores)"
(cd "$WORK/src" && CGO_ENABLED=0 GOCACHE="$WORK/gocache" \
  make WHAT=cmd/kube-apiserver)
BIN=$(find "$WORK/src/_output" -type f -name kube-apiserver -perm -u+x | head -n1)
if [ -z "$BIN" ]; then
  say "build finished but no kube-apiserver binary was found under $WORK/src/_output"
  exit 1
fi
mkdir -p "$CACHE_DIR"
cp "$BIN" "$TARGET.tmp"
mv "$TARGET.tmp" "$TARGET"
say "cached $TARGET ($("$TARGET" --version 2>/dev/null || echo '?'); $(( $(date +%s) - START )) s)"
