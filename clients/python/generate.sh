#!/usr/bin/env bash
# Generate Python stubs for the osvirt.v1 API (and gRPC server reflection)
# from the repository's proto/ into gen/, with Debian's protoc and
# grpc_python_plugin. The same command works for any language protoc has a
# plugin for; see docs/clients.md. Idempotent; gen/ is not committed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
die() { printf 'generate.sh: %s\n' "$*" >&2; exit 1; }

command -v protoc >/dev/null || die "protoc not found: apt-get install protobuf-compiler"
plugin=$(command -v grpc_python_plugin) || die "grpc_python_plugin not found: apt-get install protobuf-compiler-grpc"
wkt=/usr/include
[[ -f $wkt/google/protobuf/timestamp.proto ]] || wkt=$root/node_modules/google-proto-files
[[ -f $wkt/google/protobuf/timestamp.proto ]] || die "google/protobuf/*.proto not found: apt-get install libprotobuf-dev"
refl=/usr/share/grpc-proto/grpc/reflection/v1
[[ -f $refl/reflection.proto ]] || die "$refl/reflection.proto not found: apt-get install grpc-proto"

tmp=$(mktemp -d "$here/.gen.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mapfile -t protos < <(cd "$root/proto" && find osvirt/v1 -name '*.proto' | sort)
protoc -I "$root/proto" -I "$wkt" --python_out="$tmp" --grpc_python_out="$tmp" --plugin=protoc-gen-grpc_python="$plugin" "${protos[@]}"
protoc -I "$refl" --python_out="$tmp" --grpc_python_out="$tmp" --plugin=protoc-gen-grpc_python="$plugin" reflection.proto
rm -rf "$here/gen"
mv "$tmp" "$here/gen"
trap - EXIT
