#!/bin/sh
# Runs a dispatch fixture (corpus/fixtures/dispatch) under wine64, headless, in the private
# reusable WINEPREFIX shared with the other Wine oracles.
#
#   run.sh EXE MODE DUMP
#
# The program prints its R lines (what ran, in order) on stdout and writes DUMP (a minidump at
# the first-chance exception), DUMP.ctx and DUMP.stack beside it (see report.h).
# Environment:
#   XUNWIND_WINEPREFIX  the prefix (default: ${TMPDIR:-/tmp}/xunwind-wineprefix-<uid>);
#                       created on first use (15-60 s), then reused.
#   WINE64              the loader (default /usr/lib/wine/wine64).
set -e
exe=${1:?usage: run.sh EXE MODE DUMP}
mode=${2:?usage: run.sh EXE MODE DUMP}
dump=${3:?usage: run.sh EXE MODE DUMP}
WINE64=${WINE64:-/usr/lib/wine/wine64}
prefix=${XUNWIND_WINEPREFIX:-${TMPDIR:-/tmp}/xunwind-wineprefix-$(id -u)}
[ -x "$WINE64" ] || { echo "run.sh: $WINE64 not found (apt-get install wine64)" >&2; exit 2; }
export WINEPREFIX="$prefix" WINEARCH=win64 WINEDEBUG=-all
unset DISPLAY WAYLAND_DISPLAY
if [ ! -f "$prefix/.xunwind-ready" ]; then
    mkdir -p "$(dirname "$prefix")"
    (
        # The first-start protocol of corpus/oracle/wine-probe/run.sh, so all share one prefix.
        flock 9
        if [ ! -f "$prefix/.xunwind-ready" ]; then
            echo "run.sh: creating WINEPREFIX $prefix (first start)" >&2
            WINEDLLOVERRIDES="mscoree,mshtml=" "$WINE64" wineboot.exe --init >/dev/null 2>&1 || true
            "$(dirname "$WINE64")/wineserver" -w 2>/dev/null || true
            touch "$prefix/.xunwind-ready"
        fi
    ) 9>"$prefix.lock"
fi
# The program writes beside its working directory (wine maps relative paths).
dir=$(cd "$(dirname "$dump")" && pwd)
exe=$(cd "$(dirname "$exe")" && pwd)/$(basename "$exe")
cd "$dir"
XUNWIND_MODE=$mode XUNWIND_DUMP=$(basename "$dump") exec timeout 120 "$WINE64" "$exe"
