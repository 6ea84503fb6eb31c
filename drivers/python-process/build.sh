#!/usr/bin/env bash
# Generate the Python stubs this driver imports from the repository's proto/
# (every osvirt proto: container.proto imports its siblings) and gRPC's
# health.proto into gen/. Needs Debian's protobuf-compiler,
# protobuf-compiler-grpc, libprotobuf-dev and grpc-proto.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
exec "$here/../../scripts/gen-python-stubs.sh" "$here" osvirt /usr/share/grpc-proto/grpc/health/v1/health.proto
