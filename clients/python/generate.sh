#!/usr/bin/env bash
# Generate Python stubs for the osvirt.v1 API (and gRPC server reflection)
# from the repository's proto/ into gen/, with Debian's protoc and
# grpc_python_plugin. The same protoc command works for any language protoc
# has a plugin for; see "Use osvirt from your language" in the README.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
exec "$here/../../scripts/gen-python-stubs.sh" "$here" osvirt/v1 /usr/share/grpc-proto/grpc/reflection/v1/reflection.proto
