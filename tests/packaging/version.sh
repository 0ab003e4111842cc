#!/usr/bin/env bash
# One version number: meson's project(version:) is what `uzswapd --version`
# and `uzswapctl --version` print, and what debian/changelog's newest entry
# says (its upstream part: no epoch, no Debian revision).
#
# usage: version.sh MESON_VERSION SRC_DIR UZSWAPD UZSWAPCTL
set -uo pipefail
version=$1 src=$2 uzswapd=$3 uzswapctl=$4
status=0
fail() { echo "FAIL: $*"; status=1; }

[[ $("$uzswapd" --version) == "uzswapd $version" ]] || fail "uzswapd --version says '$("$uzswapd" --version)', meson says $version"
[[ $("$uzswapctl" --version) == "uzswapctl $version" ]] || fail "uzswapctl --version says '$("$uzswapctl" --version)', meson says $version"
# The changelog's first line: "uzswap (VERSION) DIST; urgency=...".
line=$(head -n 1 "$src/debian/changelog")
[[ $line =~ ^uzswap\ \(([^\)]+)\) ]] || fail "debian/changelog's first line is not 'uzswap (VERSION) ...': $line"
deb=${BASH_REMATCH[1]:-}
upstream=${deb#*:}
upstream=${upstream%-*}
[[ $upstream == "$version" ]] || fail "debian/changelog is at $deb, meson.build at $version: add a changelog entry (dch -v $version)"
# No second copy of the number in the sources.
if hits=$(grep -rn --include='*.cpp' --include='*.h' -F "\"$version\"" "$src/lib" "$src/daemon" "$src/tools"); then
  fail "the version is written out in the sources; use uzswap::kVersion (uzswap/version.h):"$'\n'"$hits"
fi
[[ $status -eq 0 ]] && echo "ok: uzswapd, uzswapctl and debian/changelog are at $version"
exit $status
