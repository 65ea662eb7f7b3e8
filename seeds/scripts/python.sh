#!/usr/bin/env bash
# Prints the path of a Python X.Y interpreter from Debian, providing it if it can:
#   bash seeds/scripts/python.sh 3.13
# 1. Debian's own package where the machine's Debian has it (python3.13 on Debian 13): apt-get install.
# 2. Otherwise, built once from the upstream sources of Debian's source package (python3.13 from trixie,
#    python3.14 from forky/sid; `apt-get source`) into a folder outside the checkout that later runs reuse:
#    $SEEDDUMP_PYTHON_CACHE (default ~/.cache/seeddump/python), one folder per version. About two minutes on two
#    cores.
# Installing packages needs root; without it, a missing interpreter is one line on stderr and exit status 1.
# Progress goes to stderr; stdout is only the interpreter's path.
set -euo pipefail
version=${1:?usage: python.sh X.Y}
cache=${SEEDDUMP_PYTHON_CACHE:-${HOME:-/root}/.cache/seeddump/python}
prefix="$cache/$version"
say() { echo "python.sh: $*" >&2; }

works() { "$1" -c 'import ssl, sqlite3, venv, ensurepip, lzma, bz2, ctypes' >/dev/null 2>&1; }

if [ -f "$prefix/.complete" ] && works "$prefix/bin/python$version"; then
  echo "$prefix/bin/python$version"
  exit 0
fi
if [ -x "/usr/bin/python$version" ] && works "/usr/bin/python$version"; then
  echo "/usr/bin/python$version"
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  say "no Debian-built Python $version here, and making one needs root (apt-get)"
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt_quiet() { apt-get "$@" -qq >/dev/null 2>&1; }

# 1. The machine's Debian has it.
if apt-cache policy "python$version" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
  say "installing Debian's python$version"
  apt_quiet install -y "python$version" "python$version-venv"
  echo "/usr/bin/python$version"
  exit 0
fi

# 2. Build it from Debian's source package. deb-src lines for the suites that carry it, only while fetching.
sources=/etc/apt/sources.list.d/seeddump-python-src.sources
cleanup() { rm -f "$sources"; }
trap cleanup EXIT
cat >"$sources" <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie forky sid
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
say "building Python $version from Debian's source package into $prefix (once; later runs reuse it)"
apt_quiet update || true
# What CPython's optional modules build against (ssl, sqlite3, lzma, ...): Debian 12's -dev packages.
apt_quiet install -y build-essential libssl-dev zlib1g-dev libffi-dev libsqlite3-dev libbz2-dev liblzma-dev \
  libreadline-dev uuid-dev libncurses-dev libgdbm-dev libexpat1-dev dpkg-dev
work=$(mktemp -d "${TMPDIR:-/tmp}/seeddump-python-$version.XXXXXX")
trap 'cleanup; rm -rf "$work"' EXIT
# The newest suite's index can name a version its mirror no longer serves: take the first suite that delivers.
fetched=""
for suite in trixie forky sid; do
  if (cd "$work" && apt-get source --download-only -qq "python$version/$suite" >/dev/null 2>&1); then
    fetched=$suite
    break
  fi
done
if [ -z "$fetched" ]; then
  say "Debian's mirror serves no source package python$version (trixie, forky, sid); install Python $version" \
    "another way (python$version on PATH, or in $cache/$version/bin)"
  exit 1
fi
tarball=$(ls "$work"/python"$version"_*.orig.tar.* | head -1)
say "sources: $(basename "$tarball") ($fetched)"
tar -xf "$tarball" -C "$work"
src=$(find "$work" -mindepth 1 -maxdepth 1 -type d | head -1)
rm -rf "$prefix"
if ! (
  # && and not set -e: errexit does not apply inside an if's condition.
  cd "$src" &&
    ./configure --prefix="$prefix" --with-ensurepip=install --disable-test-modules &&
    make -j"$(nproc)" &&
    make altinstall
) >"$work/build.log" 2>&1; then
  tail -20 "$work/build.log" >&2
  say "building Python $version failed (the lines above are the end of its log)"
  exit 1
fi
if ! works "$prefix/bin/python$version"; then
  say "the Python $version built in $prefix lacks a module seeddump's tests need (ssl, sqlite3, venv, ...)"
  exit 1
fi
# The mark comes last: an interrupted build is never taken for a finished one.
touch "$prefix/.complete"
echo "$prefix/bin/python$version"
