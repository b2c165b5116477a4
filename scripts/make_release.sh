#!/usr/bin/env bash
# Make the release bundle dist/imchat-<version>-linux-<arch>.tar.gz from the built binary: all a
# server needs, no source tree. Unpacked, it is one folder:
#
#   imchat                     the one-file executable
#   install.sh, uninstall.sh   run as root from this folder (sudo ./install.sh)
#   config.toml                the commented default; install.sh adapts it to /etc/imchat
#   systemd/imchat.service     the unit
#   systemd/99-imchat.conf     the kernel settings
#   docs/                      admin.md (start here), nginx-imchat.conf, protocol.md
#
# Usage: scripts/make_release.sh   (after make binary; `make release` does both)
# Environment:
#   IMCHAT_BINARY        the executable to pack (default: dist/imchat)
#   IMCHAT_RELEASE_DIR   where the .tar.gz goes (default: dist/)
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BINARY=${IMCHAT_BINARY:-$ROOT/dist/imchat}
OUT=${IMCHAT_RELEASE_DIR:-$ROOT/dist}

[ -x "$BINARY" ] || { echo "make_release: no binary at $BINARY (run make binary)" >&2; exit 1; }
# The version the binary reports, so a stale binary cannot be packed under a new name.
version=$("$BINARY" --version | sed -n 's/^imchat //p')
source_version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$ROOT/app/__init__.py")
if [ "$version" != "$source_version" ]; then
  echo "make_release: $BINARY is version '$version', the source is '$source_version':" \
       "rebuild it (make binary)" >&2
  exit 1
fi
name=imchat-$version-linux-$(uname -m)

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
bundle=$stage/$name
mkdir -p "$bundle/systemd" "$bundle/docs" "$OUT"
install -m 0755 "$BINARY" "$bundle/imchat"
install -m 0755 "$ROOT/scripts/install.sh" "$ROOT/scripts/uninstall.sh" "$bundle/"
install -m 0644 "$ROOT/config.toml" "$bundle/config.toml"
install -m 0644 "$ROOT/systemd/imchat.service" "$ROOT/systemd/99-imchat.conf" "$bundle/systemd/"
install -m 0644 "$ROOT/docs/admin.md" "$ROOT/docs/nginx-imchat.conf" "$ROOT/docs/protocol.md" \
  "$bundle/docs/"
# Owned by root in the archive whoever builds it; files in a fixed order.
tar -C "$stage" --owner=0 --group=0 --numeric-owner --sort=name -czf "$OUT/$name.tar.gz.tmp" \
  "$name"
mv -f "$OUT/$name.tar.gz.tmp" "$OUT/$name.tar.gz"
echo "make_release: $OUT/$name.tar.gz ($(du -h "$OUT/$name.tar.gz" | cut -f1))"
