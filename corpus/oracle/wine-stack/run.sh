#!/bin/sh
# Runs a stackprog build under wine64, headless, in a private reusable WINEPREFIX; prints the
# program's F/T/D lines (see stackprog.c).
#   run.sh EXE MODE DUMP        MODE: fault | thread; DUMP: where the minidump goes (Unix path)
# Environment:
#   XUNWIND_WINEPREFIX  the prefix (default: ${TMPDIR:-/tmp}/xunwind-wineprefix-<uid>, shared with
#                       corpus/oracle/wine-probe); created on first use (15-60 s), then reused.
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
        # The same first-start protocol as wine-probe/run.sh, so the two share one prefix.
        flock 9
        if [ ! -f "$prefix/.xunwind-ready" ]; then
            echo "run.sh: creating WINEPREFIX $prefix (first start)" >&2
            WINEDLLOVERRIDES="mscoree,mshtml=" "$WINE64" wineboot.exe --init >/dev/null 2>&1 || true
            "$(dirname "$WINE64")/wineserver" -w 2>/dev/null || true
            touch "$prefix/.xunwind-ready"
        fi
    ) 9>"$prefix.lock"
fi
# The program writes its dump to a path relative to its working directory (wine maps it).
dir=$(cd "$(dirname "$dump")" && pwd)
exe=$(cd "$(dirname "$exe")" && pwd)/$(basename "$exe")
cd "$dir"
XUNWIND_MODE=$mode XUNWIND_DUMP=$(basename "$dump") exec timeout 120 "$WINE64" "$exe"
