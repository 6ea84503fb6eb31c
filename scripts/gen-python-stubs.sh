#!/usr/bin/env bash
# Python stubs (protobuf messages and gRPC services) generated from the
# repository's proto/ into DEST/gen, with Debian's protoc and
# grpc_python_plugin. Used by clients/python/generate.sh and
# drivers/python-process/build.sh. Idempotent; gen/ is not committed.
#
#   gen-python-stubs.sh DEST PROTO_SUBDIR EXTRA_PROTO
#     PROTO_SUBDIR  which part of proto/ (osvirt/v1, or osvirt for all)
#     EXTRA_PROTO   one of grpc-proto's files, e.g. its health or reflection proto
set -euo pipefail
die() { printf 'gen-python-stubs.sh: %s\n' "$*" >&2; exit 1; }
[[ $# -eq 3 ]] || die "usage: gen-python-stubs.sh DEST PROTO_SUBDIR EXTRA_PROTO"
dest=$1 sub=$2 extra=$3
root=$(cd "$(dirname "$0")/.." && pwd)

command -v protoc >/dev/null || die "protoc not found: apt-get install protobuf-compiler"
plugin=$(command -v grpc_python_plugin) || die "grpc_python_plugin not found: apt-get install protobuf-compiler-grpc"
wkt=/usr/include
[[ -f $wkt/google/protobuf/timestamp.proto ]] || wkt=$root/node_modules/google-proto-files
[[ -f $wkt/google/protobuf/timestamp.proto ]] || die "google/protobuf/*.proto not found: apt-get install libprotobuf-dev"
[[ -f $extra ]] || die "$extra not found: apt-get install grpc-proto"

tmp=$(mktemp -d "$dest/.gen.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mapfile -t protos < <(cd "$root/proto" && find "$sub" -name '*.proto' | sort)
protoc -I "$root/proto" -I "$wkt" --python_out="$tmp" --grpc_python_out="$tmp" --plugin=protoc-gen-grpc_python="$plugin" "${protos[@]}"
protoc -I "$(dirname "$extra")" --python_out="$tmp" --grpc_python_out="$tmp" --plugin=protoc-gen-grpc_python="$plugin" "$(basename "$extra")"
rm -rf "$dest/gen"
mv "$tmp" "$dest/gen"
trap - EXIT
