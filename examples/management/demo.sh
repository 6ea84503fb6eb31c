#!/usr/bin/env bash
# The management-container scenario end to end against a running osvirtd:
# two workers and an outsider, one manager granted Start/Stop/Checkpoint on
# the workers. The manager's own client runs inside it (osvirt exec).
set -euo pipefail
cd "$(dirname "$0")/../.."
osvirt() { node bin/osvirt "$@"; }
worker() {
  cat <<YAML
name: $1
spec:
  driver: lxc
  rootfs: {template: busybox}
  network: {none: {}}
YAML
}
tmp=$(mktemp -d)
trap 'for n in manager worker-1 worker-2 outsider; do osvirt delete --force "$n" >/dev/null 2>&1 || true; done; rm -rf "$tmp"' EXIT
for n in worker-1 worker-2 outsider; do worker "$n" > "$tmp/$n.yaml"; osvirt create -f "$tmp/$n.yaml"; done
# The manager runs the client from this checkout: bind it in (an application
# container keeps /tmp, /run and /var private, and the checkout may be there).
{ cat examples/lxc-management.yaml; printf '  mounts:\n    - {type: MOUNT_TYPE_BIND, source: "%s", destination: "%s", readonly: true}\n' "$PWD" "$PWD"; } > "$tmp/manager.yaml"
osvirt create -f "$tmp/manager.yaml" --start
osvirt exec manager -- "$(command -v node)" "$PWD/examples/management/manage.js"
osvirt list
