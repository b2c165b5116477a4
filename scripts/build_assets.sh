#!/bin/sh
# Build the web client's third-party files: install the npm packages pinned by
# package-lock.json (npm ci, no install scripts) and copy the browser builds the pages load into
# asset/vendor/ (generated, git-ignored). Run by `make assets`; needs node and npm.
set -eu
cd "$(dirname "$0")/.."

if ! command -v npm >/dev/null 2>&1; then
  echo "build_assets: npm is needed (Debian: apt-get install npm)" >&2
  exit 1
fi

npm ci --ignore-scripts --no-audit --no-fund --loglevel=error

mkdir -p asset/vendor
cp node_modules/vue/dist/vue.global.prod.js asset/vendor/vue.global.prod.js
cp node_modules/vue/LICENSE asset/vendor/vue.LICENSE
touch asset/vendor/.built
echo "build_assets: asset/vendor/ ready (vue $(node -p "require('./node_modules/vue/package.json').version"))"
