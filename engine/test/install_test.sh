#!/bin/sh
# Installs the build into a temporary prefix and checks the installed
# layout: the CLI finds its own Lua library (not the source tree's) and
# runs an agent; an application builds against the installed library with
# pkg-config, finds the Lua library through libspool.so, and runs.
set -eu
build=$1
root=$2
app_cflags=${3:-} # the sanitizer build's flags, for the application too
prefix=$(mktemp -d /tmp/spool-install.XXXXXX)
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" >/dev/null
for f in include/spool.h lib/libspool.so lib/libspool.a \
         lib/pkgconfig/spool.pc share/spool/lua/spool/init.lua bin/spool; do
  test -e "$prefix/$f" || { echo "missing $f" >&2; exit 1; }
done
# The library precompiled, when the build had luac (l_bytecode.c).
if command -v luac5.4 >/dev/null || command -v luac >/dev/null; then
  test -e "$prefix/share/spool/luac/spool/init.luac" ||
    { echo "missing share/spool/luac/spool/init.luac" >&2; exit 1; }
fi
"$prefix/bin/spool" --version | grep -q "Lua library: $prefix/bin/../share/spool/lua"
cp -r "$root/agents" "$root/prompts" "$root/data" "$root/mock" \
  "$root/spool.lua" "$prefix/"
cd /
"$prefix/bin/spool" --project "$prefix" run classify --json \
  --input "refund order 5531" | grep -q '"category":"refund"'
# An application, built the way its authors would.
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
# shellcheck disable=SC2086
cc $app_cflags -o "$prefix/inventory" "$root/examples/inventory/inventory.c" \
  $(pkg-config --cflags --libs spool libuv)
LD_LIBRARY_PATH="$prefix/lib" "$prefix/inventory" \
  "$root/examples/inventory" | grep -q "now: 30"
