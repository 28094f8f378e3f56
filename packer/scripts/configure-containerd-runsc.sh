#!/usr/bin/env bash
# Registers gVisor's runsc runtime handler with containerd the way AL2023 EKS nodes take
# containerd settings: through nodeadm, not by editing /etc/containerd/config.toml.
#
# Why a nodeadm drop-in and not a containerd drop-in or an edited config.toml:
#  - nodeadm rewrites /etc/containerd/config.toml from its own template on every boot, so edits
#    baked into the AMI are lost; its AL2023 template has no `imports` line, so files in
#    /etc/containerd/config.d/ are never read (that import exists on AL2 only: amazon-eks-ami
#    #1630; porting it to AL2023 was declined in favour of NodeConfig, #2030).
#  - nodeadm merges NodeConfig spec.containerd.config (inline TOML) into the config it renders
#    (nodeadm/internal/containerd/config.go, combineContainerdConfigs).
#  - nodeadm reads NodeConfig drop-ins from /etc/eks/nodeadm.d/ after the user data, and they take
#    precedence (amazon-eks-ami #2427, "add config provider chain and support drop-ins";
#    nodeadm/README.md: config sources imds://user-data and file:///etc/eks/nodeadm.d/).
# So the AMI carries a NodeConfig drop-in with the runsc handler, and the EC2NodeClass user data
# needs nothing for gVisor. spec.containerd.config is one string and the last NodeConfig that sets
# it wins: other containerd settings for these nodes belong in this same drop-in.
#
# Environment:
#   ROOT       target root directory (default: empty = this machine); tests pass a temp dir
#   FILES_DIR  directory holding runsc-runtime.toml and runsc.toml (default: ../files next to
#              this script; packer uploads them and sets it)
set -euo pipefail

log() { printf 'configure-containerd-runsc: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

root="${ROOT:-}"
root="${root%/}"
files_dir="${FILES_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../files" && pwd)}"
runtime_toml="$files_dir/runsc-runtime.toml"
runsc_toml="$files_dir/runsc.toml"
[[ -r "$runtime_toml" ]] || die "missing $runtime_toml"
[[ -r "$runsc_toml" ]] || die "missing $runsc_toml"

dropin_dir="$root/etc/eks/nodeadm.d"
dropin="$dropin_dir/50-workspace-sandbox-runsc.yaml"
runsc_config="$root/etc/containerd/runsc.toml"

# An older base AMI whose nodeadm does not read /etc/eks/nodeadm.d/ would boot with the drop-in
# silently ignored and every gVisor pod stuck in ContainerCreating: fail the build instead.
nodeadm_reads_dropins() {
  local candidate
  for candidate in "$root/usr/bin/nodeadm" "$root"/etc/systemd/system/nodeadm-*.service "$root"/usr/lib/systemd/system/nodeadm-*.service; do
    [[ -f "$candidate" ]] && grep -aqF '/etc/eks/nodeadm.d' "$candidate" && return 0
  done
  return 1
}
nodeadm_reads_dropins || die "this image's nodeadm does not read NodeConfig drop-ins from /etc/eks/nodeadm.d/ (needs an AL2023 EKS AMI with amazon-eks-ami #2427, late 2025 or newer)"

# Everything is written under a temporary name and renamed, so a failed run leaves no partial file.
install -d -m 0755 "$dropin_dir" "$root/etc/containerd"

install -m 0644 "$runsc_toml" "$runsc_config.tmp"
mv -f "$runsc_config.tmp" "$runsc_config"

{
  printf '%s\n' \
    '# Written by workspace-sandbox packer/scripts/configure-containerd-runsc.sh.' \
    '# nodeadm merges spec.containerd.config into /etc/containerd/config.toml at boot.' \
    'apiVersion: node.eks.aws/v1alpha1' \
    'kind: NodeConfig' \
    'spec:' \
    '  containerd:' \
    '    config: |'
  # The TOML's comments stay in the source file (nodeadm re-marshals the merged config anyway and
  # detects the config schema by substring, so prose must not reach it); every other line is
  # indented into the YAML block scalar, empty lines stay empty.
  grep -v '^[[:space:]]*#' "$runtime_toml" | sed -e '/./,$!d' -e 's/^\(.\)/      \1/'
} > "$dropin.tmp"
chmod 0644 "$dropin.tmp"
mv -f "$dropin.tmp" "$dropin"

log "wrote $dropin and $runsc_config"
