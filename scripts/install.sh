#!/bin/sh
# Install (or upgrade) imchat on a systemd Linux machine from the one-file binary.
#
#   sudo ./install.sh                         # in an unpacked release bundle (make release)
#   sudo scripts/install.sh                   # in the repository, after make binary
#   sudo IMCHAT_BINARY=/path/to/imchat scripts/install.sh
#
# What it does (every step is safe to repeat; an upgrade is the same command):
#   - checks the binary runs, and that it accepts an existing /etc/imchat/config.toml
#     (a config the new version refuses stops the upgrade before anything is changed);
#   - creates the system user and group `imchat` (no login shell, home /var/lib/imchat);
#   - installs the binary as /usr/local/bin/imchat (replaced atomically: a running server keeps
#     its old copy until it restarts);
#   - writes /etc/imchat/config.toml only if it does not exist (an upgrade keeps the admin's
#     edits): the shipped config.toml with the database and uploads under /var/lib/imchat,
#     mode = "production" and server.backlog equal to the net.core.somaxconn of the kernel
#     settings below (the kernel caps the listen queue at that). The new default is always
#     written beside it as config.toml.default, to compare after an upgrade;
#   - creates /var/lib/imchat (database, uploads) owned by imchat, mode 0750;
#   - installs the unit /etc/systemd/system/imchat.service, the kernel settings
#     /etc/sysctl.d/99-imchat.conf (applied at once) and the admin guide under
#     /usr/local/share/doc/imchat;
#   - when systemd is running: daemon-reload, enable imchat, then start it (or restart it, on an
#     upgrade) and wait until it reports ready.
#
# Environment:
#   IMCHAT_BINARY    the executable to install (default: ./imchat beside this script in a
#                    release bundle, dist/imchat in the repository)
#   DESTDIR          install under this root instead of / (packaging, tests). With DESTDIR no
#                    user is created, nothing is chowned, sysctl is not applied and systemd is
#                    left alone: those act on the running machine, not on the tree.
#   IMCHAT_NO_START  1: install and enable, but do not start or restart the service.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
if [ -f "$HERE/config.toml" ] && [ -f "$HERE/systemd/imchat.service" ]; then
  SRC=$HERE                   # an unpacked release bundle: everything beside this script
  DEFAULT_BINARY=$HERE/imchat
else
  SRC=$(cd "$HERE/.." && pwd)  # the repository's scripts/ folder
  DEFAULT_BINARY=$SRC/dist/imchat
fi
DESTDIR=${DESTDIR:-}
BINARY=${IMCHAT_BINARY:-$DEFAULT_BINARY}
NO_START=${IMCHAT_NO_START:-0}

BIN_DIR=$DESTDIR/usr/local/bin
CONF_DIR=$DESTDIR/etc/imchat
DATA_DIR=$DESTDIR/var/lib/imchat
UNIT_DIR=$DESTDIR/etc/systemd/system
SYSCTL_DIR=$DESTDIR/etc/sysctl.d
DOC_DIR=$DESTDIR/usr/local/share/doc/imchat
SERVICE_USER=imchat

say() { printf 'install: %s\n' "$*"; }
die() { printf 'install: error: %s\n' "$*" >&2; exit 1; }

# --- checks: nothing is changed until they pass ---------------------------------------------
[ -f "$BINARY" ] || die "no binary at $BINARY (build it with make binary, or set IMCHAT_BINARY)"
[ -x "$BINARY" ] || die "$BINARY is not executable"
for file in config.toml systemd/imchat.service systemd/99-imchat.conf; do
  [ -f "$SRC/$file" ] || die "missing $SRC/$file (run the install.sh of an unpacked release bundle or of the imchat repository)"
done
# The listen queue the kernel settings allow: the installed config asks for exactly that.
somaxconn=$(sed -n 's/^net\.core\.somaxconn *= *\([0-9][0-9]*\) *$/\1/p' "$SRC/systemd/99-imchat.conf")
[ -n "$somaxconn" ] || die "no net.core.somaxconn line in $SRC/systemd/99-imchat.conf"
if [ -z "$DESTDIR" ] && [ "$(id -u)" -ne 0 ]; then
  die "run as root (sudo), or set DESTDIR to install into a directory"
fi
version=$("$BINARY" --version) || die "$BINARY does not run on this machine"
say "installing $version"
if [ -f "$CONF_DIR/config.toml" ]; then
  # The new version must accept the config the service will start with.
  if ! "$BINARY" check-config --config "$CONF_DIR/config.toml" >/dev/null; then
    die "$version refuses $CONF_DIR/config.toml (see above); fix it, then run this again"
  fi
fi

# --- user -------------------------------------------------------------------------------------
if [ -z "$DESTDIR" ]; then
  if ! getent group "$SERVICE_USER" >/dev/null; then
    groupadd --system "$SERVICE_USER"
    say "created group $SERVICE_USER"
  fi
  if ! getent passwd "$SERVICE_USER" >/dev/null; then
    nologin=/usr/sbin/nologin
    [ -x "$nologin" ] || nologin=/sbin/nologin
    [ -x "$nologin" ] || nologin=/bin/false
    useradd --system --gid "$SERVICE_USER" --home-dir /var/lib/imchat --no-create-home \
      --shell "$nologin" --comment "imchat chat server" "$SERVICE_USER"
    say "created system user $SERVICE_USER"
  fi
else
  say "DESTDIR set: not creating user $SERVICE_USER, not changing owners"
fi

# --- binary -----------------------------------------------------------------------------------
mkdir -p "$BIN_DIR"
# Copy beside the target, then rename over it: the running server keeps its (unlinked) copy.
install -m 0755 "$BINARY" "$BIN_DIR/.imchat.new"
mv -f "$BIN_DIR/.imchat.new" "$BIN_DIR/imchat"
say "binary: $BIN_DIR/imchat"

# --- config -----------------------------------------------------------------------------------
mkdir -p "$CONF_DIR"
chmod 0755 "$CONF_DIR"
default_config=$CONF_DIR/config.toml.default
# The shipped config.toml, made for this layout: absolute data paths, production mode, the
# listen queue of the kernel settings.
sed -e 's|^path = .*|path = "/var/lib/imchat/imchat.db"|' \
    -e 's|^upload_dir = .*|upload_dir = "/var/lib/imchat/resource"|' \
    -e 's|^mode = .*|mode = "production"|' \
    -e "s|^backlog = .*|backlog = $somaxconn|" \
    "$SRC/config.toml" > "$default_config.tmp"
for line in 'path = "/var/lib/imchat/imchat.db"' 'upload_dir = "/var/lib/imchat/resource"' \
            'mode = "production"' "backlog = $somaxconn"; do
  grep -qxF "$line" "$default_config.tmp" \
    || die "could not adapt $SRC/config.toml (no line '$line' after editing)"
done
chmod 0644 "$default_config.tmp"
mv -f "$default_config.tmp" "$default_config"
if [ -f "$CONF_DIR/config.toml" ]; then
  say "config: kept $CONF_DIR/config.toml (the new default is $default_config)"
else
  # It may come to hold the MySQL password: readable by root and the service only.
  cp "$default_config" "$CONF_DIR/config.toml.tmp"
  chmod 0640 "$CONF_DIR/config.toml.tmp"
  if [ -z "$DESTDIR" ]; then
    chgrp "$SERVICE_USER" "$CONF_DIR/config.toml.tmp"
  fi
  mv -f "$CONF_DIR/config.toml.tmp" "$CONF_DIR/config.toml"
  "$BIN_DIR/imchat" check-config --config "$CONF_DIR/config.toml" >/dev/null \
    || die "the new $CONF_DIR/config.toml does not load"
  say "config: wrote $CONF_DIR/config.toml"
fi

# --- data -------------------------------------------------------------------------------------
mkdir -p "$DATA_DIR/resource"
chmod 0750 "$DATA_DIR" "$DATA_DIR/resource"
if [ -z "$DESTDIR" ]; then
  chown "$SERVICE_USER:$SERVICE_USER" "$DATA_DIR" "$DATA_DIR/resource"
  # Files an admin created as root (e.g. imchat init-db) would be unwritable for the service.
  find "$DATA_DIR" -maxdepth 1 -name 'imchat.db*' -exec chown "$SERVICE_USER:$SERVICE_USER" {} +
fi
say "data: $DATA_DIR"

# --- unit, kernel settings, docs ----------------------------------------------------------------
mkdir -p "$UNIT_DIR" "$SYSCTL_DIR"
install -m 0644 "$SRC/systemd/imchat.service" "$UNIT_DIR/imchat.service"
install -m 0644 "$SRC/systemd/99-imchat.conf" "$SYSCTL_DIR/99-imchat.conf"
if [ -f "$SRC/docs/admin.md" ]; then
  mkdir -p "$DOC_DIR"
  install -m 0644 "$SRC/docs/admin.md" "$DOC_DIR/admin.md"
  if [ -f "$SRC/docs/nginx-imchat.conf" ]; then
    install -m 0644 "$SRC/docs/nginx-imchat.conf" "$DOC_DIR/nginx-imchat.conf"
  fi
fi
say "unit: $UNIT_DIR/imchat.service, kernel settings: $SYSCTL_DIR/99-imchat.conf"
if [ -z "$DESTDIR" ]; then
  # Containers often have a read-only /proc/sys: the file still applies on a real boot.
  if sysctl -q -p "$SYSCTL_DIR/99-imchat.conf" >/dev/null 2>&1; then
    say "kernel settings applied"
  else
    say "warning: could not apply $SYSCTL_DIR/99-imchat.conf now (they apply at boot)"
  fi
fi

# --- service ----------------------------------------------------------------------------------
# /run/systemd/system exists only when systemd is PID 1 (what sd_booted() checks).
if [ -n "$DESTDIR" ]; then
  say "DESTDIR set: systemd left alone"
elif [ ! -d /run/systemd/system ]; then
  say "systemd is not running here: start the server with"
  say "  sudo -u $SERVICE_USER /usr/local/bin/imchat serve --config /etc/imchat/config.toml"
else
  systemctl daemon-reload
  systemctl enable --quiet imchat
  if [ "$NO_START" = 1 ]; then
    say "enabled imchat (not started: IMCHAT_NO_START=1)"
  elif systemctl is-active --quiet imchat; then
    systemctl restart imchat
    say "restarted imchat with $version"
  else
    systemctl start imchat
    say "started imchat"
  fi
  if [ "$NO_START" != 1 ]; then
    # Type=notify: start/restart returned once a worker reported ready (or failed).
    systemctl is-active --quiet imchat \
      || die "imchat did not start: see journalctl -u imchat -n 50"
    say "running: systemctl status imchat; logs: journalctl -u imchat -f"
  fi
fi
say "done"
