#!/usr/bin/env bash
# Gets the offline image-text sets (see README "Image-text data") from Debian's packages, no
# root needed: Open Clip Art (openclipart-png + openclipart-svg, public domain; SVG <dc:title>
# and <dc:description> are the captions) and Tux Paint's default stamps
# (tuxpaint-stamps-default, GPL-2; each PNG has a .txt whose first line is its caption; the
# stamps' category folders also make a small labelled colour dataset).
# Unpacked into ${SSLAX_DATA_DIR:-~/.cache/sslax/datasets}/{openclipart,tuxpaint-stamps}.
# Idempotent; about 320 MB downloaded, 1 GB unpacked.
set -euo pipefail
cache=${SSLAX_DATA_DIR:-$HOME/.cache/sslax/datasets}
mkdir -p "$cache"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
get() {  # get PACKAGE SOURCE_DIR_IN_PACKAGE TARGET
  local pkg=$1 src=$2 target=$cache/$3
  if [ -d "$target/$(basename "$src")" ]; then echo "get_image_text_data: $pkg already in $target"; return; fi
  (cd "$tmp" && apt-get download -q "$pkg" >/dev/null 2>&1) || {
    echo "get_image_text_data: 'apt-get download $pkg' failed; this needs Debian's package index (apt-get update)" >&2; exit 1; }
  dpkg-deb -x "$tmp"/"${pkg}"_*.deb "$tmp/x"
  mkdir -p "$target" && cp -r "$tmp/x/$src" "$target/"
  rm -rf "$tmp/x" "$tmp"/*.deb
  echo "get_image_text_data: $pkg -> $target/$(basename "$src")"
}
get openclipart-png usr/share/openclipart/png openclipart
get openclipart-svg usr/share/openclipart/svg openclipart
get tuxpaint-stamps-default usr/share/tuxpaint/stamps tuxpaint-stamps
