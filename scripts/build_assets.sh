#!/bin/sh
# Build the web client's third-party files: install the npm packages pinned by
# package-lock.json (npm ci, no install scripts), copy the browser builds the pages load into
# asset/vendor/, and compile the Vue templates (asset/js/components/*.html) into
# asset/build/templates.js with @vue/compiler-dom (both generated, git-ignored). Run by
# `make assets`; needs node and npm.
set -eu
cd "$(dirname "$0")/.."

if ! command -v npm >/dev/null 2>&1; then
  echo "build_assets: npm is needed (Debian: apt-get install npm)" >&2
  exit 1
fi

npm ci --ignore-scripts --no-audit --no-fund --loglevel=error

mkdir -p asset/vendor
# The runtime-only build: the templates are compiled here, so the page needs no eval.
rm -f asset/vendor/vue.global.prod.js
cp node_modules/vue/dist/vue.runtime.global.prod.js asset/vendor/vue.runtime.global.prod.js
cp node_modules/vue/LICENSE asset/vendor/vue.LICENSE
# Swagger UI for /docs, served from this server (never a CDN: on a LAN without internet the
# page would be blank, and a compromised CDN script would run with the visitor's session).
mkdir -p asset/vendor/swagger-ui
for name in swagger-ui-bundle.js swagger-ui-standalone-preset.js swagger-ui.css LICENSE NOTICE; do
  cp "node_modules/swagger-ui-dist/$name" "asset/vendor/swagger-ui/$name"
done
node scripts/compile_templates.js
touch asset/vendor/.built
echo "build_assets: asset/vendor/ ready (vue $(node -p "require('./node_modules/vue/package.json').version"))"
