#!/bin/sh
# Installs the build into a temporary prefix and checks that the installed
# spool finds its own Lua library (not the source tree's) and runs an agent.
set -eu
build=$1
root=$2
prefix=$(mktemp -d /tmp/spool-install.XXXXXX)
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" >/dev/null
test -f "$prefix/include/spool.h"
test -f "$prefix/share/spool/lua/spool/init.lua"
"$prefix/bin/spool" --version | grep -q "Lua library: $prefix/bin/../share/spool/lua"
cp -r "$root/agents" "$root/prompts" "$root/data" "$root/mock" \
  "$root/spool.lua" "$prefix/"
cd /
"$prefix/bin/spool" --project "$prefix" run classify --json \
  --input "refund order 5531" | grep -q '"category":"refund"'
