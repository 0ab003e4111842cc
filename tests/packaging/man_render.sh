#!/usr/bin/env bash
# The generated man pages render: man -l with groff's warnings on reports
# nothing, and each has its NAME, SYNOPSIS and SEE ALSO.
#
# usage: man_render.sh PAGE...
set -uo pipefail
command -v man >/dev/null || { echo "SKIP: no man (apt-get install man-db)"; exit 77; }
status=0
for page in "$@"; do
  text=$(MANWIDTH=80 man --warnings -l "$page" 2>"$page.warnings")
  if [[ -s $page.warnings ]]; then
    echo "FAIL: $page: $(cat "$page.warnings")"
    status=1
  fi
  for heading in NAME SYNOPSIS "SEE ALSO"; do
    grep -q "^$heading" <<<"$text" || { echo "FAIL: $page has no $heading"; status=1; }
  done
  rm -f "$page.warnings"
  echo "$(basename "$page"): $(wc -l <<<"$text") lines"
done
[[ $status -eq 0 ]] && echo "ok: $# man pages render without warnings"
exit $status
