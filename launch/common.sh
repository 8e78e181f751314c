# Shared by the launch scripts: print every command, run it unless --dry-run.
# shellcheck shell=bash
DRY_RUN=0
run() {
  printf '+ %s\n' "$*"
  if [ "$DRY_RUN" = 0 ]; then "$@"; fi
}
die() { echo "error: $*" >&2; exit 2; }
require() {  # require VAR... : refuse to run with a missing required setting
  local missing=()
  for v in "$@"; do [ -n "${!v:-}" ] || missing+=("$v"); done
  [ ${#missing[@]} = 0 ] || die "missing required setting(s): ${missing[*]} (see --help)"
}
