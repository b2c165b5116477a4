#!/bin/sh
# Remove imchat installed by scripts/install.sh.
#
#   sudo scripts/uninstall.sh            # remove the program; keep config, data and user
#   sudo scripts/uninstall.sh --purge    # also delete /etc/imchat, /var/lib/imchat (the
#                                        # database and every upload) and the imchat user
#
# DESTDIR: remove from that root instead of / (the user and systemd are then left alone).
# Kernel settings already applied stay in effect until the next boot.
set -eu

DESTDIR=${DESTDIR:-}
PURGE=0
for arg in "$@"; do
  case $arg in
    --purge) PURGE=1 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) printf 'uninstall: unknown argument %s (use --purge or nothing)\n' "$arg" >&2; exit 2 ;;
  esac
done

say() { printf 'uninstall: %s\n' "$*"; }

if [ -z "$DESTDIR" ] && [ "$(id -u)" -ne 0 ]; then
  printf 'uninstall: error: run as root (sudo), or set DESTDIR\n' >&2
  exit 1
fi

if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; then
  if systemctl list-unit-files imchat.service >/dev/null 2>&1; then
    systemctl disable --now --quiet imchat.service 2>/dev/null || true
    say "stopped and disabled imchat"
  fi
fi

for file in \
  "$DESTDIR/etc/systemd/system/imchat.service" \
  "$DESTDIR/etc/sysctl.d/99-imchat.conf" \
  "$DESTDIR/usr/local/bin/imchat" \
  "$DESTDIR/usr/local/share/doc/imchat/admin.md" \
  "$DESTDIR/usr/local/share/doc/imchat/nginx-imchat.conf" \
  "$DESTDIR/etc/imchat/config.toml.default"; do
  if [ -e "$file" ]; then
    rm -f "$file"
    say "removed $file"
  fi
done
rmdir "$DESTDIR/usr/local/share/doc/imchat" 2>/dev/null || true
if [ -d "$DESTDIR/etc/systemd/system/imchat.service.d" ]; then
  say "kept drop-ins in $DESTDIR/etc/systemd/system/imchat.service.d (remove them by hand)"
fi
if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
fi

if [ "$PURGE" = 1 ]; then
  rm -rf "$DESTDIR/etc/imchat" "$DESTDIR/var/lib/imchat"
  say "purged $DESTDIR/etc/imchat and $DESTDIR/var/lib/imchat"
  if [ -z "$DESTDIR" ] && getent passwd imchat >/dev/null; then
    userdel imchat
    if getent group imchat >/dev/null; then
      groupdel imchat
    fi
    say "removed user imchat"
  fi
else
  say "kept $DESTDIR/etc/imchat and $DESTDIR/var/lib/imchat (data); --purge deletes them"
fi
say "done"
