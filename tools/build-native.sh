#!/usr/bin/env bash
# Builds rebound's native addon (src/native: lseek SEEK_DATA/SEEK_HOLE) with node-gyp, offline:
# the headers are the installed Node's own (include/node beside the node binary's prefix, e.g.
# /usr/include/node from Debian's or NodeSource's nodejs package), never a download. Needs g++,
# make and python3 (tools/setup.sh installs them). Without the addon rebound still runs: raw
# files then report every byte as data.
set -euo pipefail
cd "$(dirname "$0")/../src/native"
prefix=$(node -p 'require("path").resolve(process.execPath, "../..")')
if [[ ! -f "$prefix/include/node/node_api.h" ]]; then
  echo "build-native: no Node headers in $prefix/include/node (install the nodejs package's headers, e.g. libnode-dev)" >&2
  exit 1
fi
gyp=${npm_config_node_gyp:-}
if [[ -z "$gyp" || ! -f "$gyp" ]]; then
  npm_root=$(dirname "$(readlink -f "$(command -v npm)")")/..
  gyp="$npm_root/node_modules/node-gyp/bin/node-gyp.js"
fi
if [[ ! -f "$gyp" ]]; then
  echo "build-native: node-gyp not found (it ships with npm)" >&2
  exit 1
fi
node "$gyp" rebuild --nodedir="$prefix" --loglevel=warn
