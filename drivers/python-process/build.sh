#!/usr/bin/env bash
# Generate the Python stubs this driver imports from the repository's proto/
# (and gRPC's health.proto) into gen/. Needs Debian's protobuf-compiler,
# protobuf-compiler-grpc (grpc_python_plugin), libprotobuf-dev (the
# well-known types) and grpc-proto (health.proto). Idempotent; gen/ is not
# committed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
die() { printf 'build.sh: %s\n' "$*" >&2; exit 1; }

command -v protoc >/dev/null || die "protoc not found: apt-get install protobuf-compiler"
plugin=$(command -v grpc_python_plugin) || die "grpc_python_plugin not found: apt-get install protobuf-compiler-grpc"
wkt=/usr/include
[[ -f $wkt/google/protobuf/timestamp.proto ]] || wkt=$root/node_modules/google-proto-files
[[ -f $wkt/google/protobuf/timestamp.proto ]] || die "google/protobuf/*.proto not found: apt-get install libprotobuf-dev"
health=/usr/share/grpc-proto/grpc/health/v1
[[ -f $health/health.proto ]] || die "$health/health.proto not found: apt-get install grpc-proto"

tmp=$(mktemp -d "$here/.gen.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# Every osvirt proto: container.proto imports its siblings.
mapfile -t protos < <(cd "$root/proto" && find osvirt -name '*.proto' | sort)
protoc -I "$root/proto" -I "$wkt" --python_out="$tmp" --grpc_python_out="$tmp" --plugin=protoc-gen-grpc_python="$plugin" "${protos[@]}"
protoc -I "$health" --python_out="$tmp" --grpc_python_out="$tmp" --plugin=protoc-gen-grpc_python="$plugin" health.proto
rm -rf "$here/gen"
mv "$tmp" "$here/gen"
trap - EXIT
