# Shared by the bench scripts (sourced, not run): building the binaries under test and installing the peers.
# Expects $root (the repository) to be set.

# Builds ringway and ringway-load in release unless $1 is 0, and sets $ringway and $load to their paths
# (under CARGO_TARGET_DIR, default <repo>/target). Exits if either is missing.
bench_binaries() {
  local target="${CARGO_TARGET_DIR:-$root/target}"
  if [ "${1:-1}" = 1 ]; then
    cargo build --release -p ringway -p ringway-load >&2
  fi
  ringway="$target/release/ringway"
  load="$target/release/ringway-load"
  [ -x "$ringway" ] && [ -x "$load" ] || { echo "missing $ringway or $load (build first)" >&2; exit 2; }
}

# Installs the Debian packages whose command is missing (arguments: command names, which here equal the package
# names) with apt-get, unless $BENCH_INSTALL is 0; then exits if any command is still missing.
bench_require() {
  local missing=() cmd
  for cmd in "$@"; do
    command -v "$cmd" >/dev/null || missing+=("$cmd")
  done
  if [ "${#missing[@]}" -gt 0 ] && [ "${BENCH_INSTALL:-1}" = 1 ]; then
    echo "installing ${missing[*]} (apt-get)" >&2
    apt-get update >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >&2
  fi
  for cmd in "$@"; do
    command -v "$cmd" >/dev/null || { echo "$cmd missing" >&2; exit 2; }
  done
}
