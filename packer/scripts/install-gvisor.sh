#!/usr/bin/env bash
# Installs gVisor's runsc and containerd-shim-runsc-v1 for one pinned release into
# $INSTALL_PREFIX/bin, after checking each download against the SHA-512 file published beside it.
# Nothing is installed unless both binaries verify; any failure exits non-zero (and fails the
# packer build).
#
# Environment:
#   GVISOR_RELEASE    pinned release, e.g. 20250707.0 (required; "latest" is refused on purpose:
#                     an AMI must say which gVisor it carries)
#   GVISOR_ARCH       x86_64 or aarch64 (arm64/amd64 accepted); default: uname -m
#   GVISOR_BASE_URL   release bucket; default https://storage.googleapis.com/gvisor/releases/release
#                     (tests point it at a local server)
#   INSTALL_PREFIX    default /usr/local (binaries go to $INSTALL_PREFIX/bin, on containerd's PATH)
#   GVISOR_RUNSC_SHA512, GVISOR_SHIM_SHA512
#                     required pins (128 hex digits, for this release and architecture): the
#                     published checksum must equal these. The .sha512 files come from the same
#                     bucket as the binaries, so on their own they prove an intact download, not
#                     an authentic one; a pin recorded when the release was reviewed proves both.
#                     A build without them fails before any download.
set -euo pipefail

log() { printf 'install-gvisor: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

release="${GVISOR_RELEASE:-}"
[[ -n "$release" ]] || die "GVISOR_RELEASE is not set (a dated release such as 20250707.0)"
[[ "$release" =~ ^[0-9]{8}(\.[0-9]+)?$ ]] || die "GVISOR_RELEASE '$release' is not a dated release (YYYYMMDD or YYYYMMDD.N)"

arch="${GVISOR_ARCH:-$(uname -m)}"
case "$arch" in
  x86_64 | amd64) arch=x86_64 ;;
  aarch64 | arm64) arch=aarch64 ;;
  *) die "unsupported architecture '$arch' (gVisor publishes x86_64 and aarch64)" ;;
esac

# require_pin NAME: the variable holds a SHA-512 (128 hex digits).
require_pin() {
  local value="${!1:-}"
  [[ -n "$value" ]] || die "$1 is not set: pin the reviewed SHA-512 of this release and architecture (packer/README.md)"
  [[ "$value" =~ ^[0-9a-fA-F]{128}$ ]] || die "$1 is not a SHA-512 (128 hex digits)"
}
require_pin GVISOR_RUNSC_SHA512
require_pin GVISOR_SHIM_SHA512

base_url="${GVISOR_BASE_URL:-https://storage.googleapis.com/gvisor/releases/release}"
prefix="${INSTALL_PREFIX:-/usr/local}"
url="${base_url%/}/${release}/${arch}"

workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT

fetch() {
  # --fail: an HTTP error is an error, not an HTML page saved as a binary.
  curl --fail --silent --show-error --location --retry 3 --connect-timeout 20 \
    --output "$2" "$1" || die "download of $1 failed"
}

# verify FILE PIN: FILE.sha512 holds "<128 hex digits>  <name>" (sha512sum's format).
verify() {
  local file="$1" pin="$2" expected actual
  read -r expected _ < "$workdir/$file.sha512" || die "$file.sha512 is empty"
  expected="${expected,,}"
  [[ "$expected" =~ ^[0-9a-f]{128}$ ]] || die "$file.sha512 does not hold a SHA-512 digest"
  if [[ "$expected" != "${pin,,}" ]]; then
    die "$file: published checksum $expected differs from the pinned $pin"
  fi
  actual="$(sha512sum "$workdir/$file" | cut -d' ' -f1)"
  [[ "$actual" == "$expected" ]] || die "$file: SHA-512 mismatch (expected $expected, got $actual)"
  log "$file: SHA-512 verified"
}

binaries=(runsc containerd-shim-runsc-v1)
for bin in "${binaries[@]}"; do
  log "downloading $url/$bin"
  fetch "$url/$bin" "$workdir/$bin"
  fetch "$url/$bin.sha512" "$workdir/$bin.sha512"
done

verify runsc "$GVISOR_RUNSC_SHA512"
verify containerd-shim-runsc-v1 "$GVISOR_SHIM_SHA512"

# Only now, with both verified, touch the target: install under a temporary name in the same
# directory, then rename, so a reader never sees a half-written binary.
install -d -m 0755 "$prefix/bin"
for bin in "${binaries[@]}"; do
  install -m 0755 "$workdir/$bin" "$prefix/bin/.$bin.new"
  mv -f "$prefix/bin/.$bin.new" "$prefix/bin/$bin"
done

# Smoke test: the binary runs on this kernel and is the release that was asked for.
version_output="$("$prefix/bin/runsc" --version)" || die "runsc --version failed"
printf '%s\n' "$version_output" >&2
[[ "$version_output" == *"$release"* ]] || die "runsc reports a version other than $release"
log "installed gVisor $release ($arch) into $prefix/bin"
