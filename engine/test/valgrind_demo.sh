#!/bin/sh
# Runs the demo pipeline end to end (real HTTP to the in-process mock
# model) under valgrind in a copy of the project, and fails on any memory
# error or definite/indirect leak.
set -eu
bin=$1
root=$2
dir=$(mktemp -d /tmp/spool-valgrind.XXXXXX)
trap 'rm -rf "$dir"' EXIT
cp -r "$root/agents" "$root/prompts" "$root/data" "$root/mock" \
  "$root/spool.lua" "$dir/"
valgrind --quiet --leak-check=full --errors-for-leak-kinds=definite,indirect \
  --error-exitcode=99 "$bin" --project "$dir" run support \
  --input "Hi, this is Ana. Order 5531 arrived broken, refund please." \
  >"$dir/out"
grep -q "support ✓ Dear Ana," "$dir/out"
