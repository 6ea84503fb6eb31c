#!/usr/bin/env bash
# Exits non-zero when a C file under native/ is not formatted as .clang-format
# says, and prints what clang-format would change. Fix with:
#   clang-format -i $(git ls-files 'native/*.c' 'native/*.h')
set -euo pipefail
cd "$(dirname "$0")/.."
command -v clang-format >/dev/null || { echo "check-format-c: clang-format is not installed (Debian package clang-format)" >&2; exit 2; }
mapfile -t files < <(git ls-files --cached --others --exclude-standard -- 'native/*.c' 'native/*.h')
(( ${#files[@]} )) || { echo "check-format-c: no C files found under native/" >&2; exit 2; }
status=0
for f in "${files[@]}"; do
  if ! clang-format --style=file --dry-run --Werror "$f" >/dev/null 2>&1; then
    echo "check-format-c: $f is not formatted; clang-format would change:" >&2
    diff -u "$f" <(clang-format --style=file "$f") | head -40 >&2 || true
    status=1
  fi
done
(( status == 0 )) && echo "check-format-c: ${#files[@]} files formatted"
exit "$status"
