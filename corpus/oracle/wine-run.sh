#!/bin/sh
# Runs one of our Windows test programs under wine64, headless, in the private reusable
# WINEPREFIX shared by every Wine oracle here; the program is started in DUMP's directory with
# XUNWIND_MODE=MODE and XUNWIND_DUMP=<DUMP's file name> (it writes its dump there; wine maps
# relative paths). Used by wine-stack/run.sh and wine-dispatch/run.sh.
#   wine-run.sh EXE MODE DUMP
# Environment:
#   XUNWIND_WINEPREFIX  the prefix (default: ${TMPDIR:-/tmp}/xunwind-wineprefix-<uid>, shared with
#                       corpus/oracle/wine-probe); created on first use (15-60 s), then reused.
#   WINE64              the loader (default /usr/lib/wine/wine64).
set -e
exe=${1:?usage: wine-run.sh EXE MODE DUMP}
mode=${2:?usage: wine-run.sh EXE MODE DUMP}
dump=${3:?usage: wine-run.sh EXE MODE DUMP}
WINE64=${WINE64:-/usr/lib/wine/wine64}
prefix=${XUNWIND_WINEPREFIX:-${TMPDIR:-/tmp}/xunwind-wineprefix-$(id -u)}
[ -x "$WINE64" ] || { echo "wine-run.sh: $WINE64 not found (apt-get install wine64)" >&2; exit 2; }
export WINEPREFIX="$prefix" WINEARCH=win64 WINEDEBUG=-all
unset DISPLAY WAYLAND_DISPLAY
if [ ! -f "$prefix/.xunwind-ready" ]; then
    mkdir -p "$(dirname "$prefix")"
    (
        # The same first-start protocol as wine-probe/run.sh, so the two share one prefix.
        flock 9
        if [ ! -f "$prefix/.xunwind-ready" ]; then
            echo "wine-run.sh: creating WINEPREFIX $prefix (first start)" >&2
            WINEDLLOVERRIDES="mscoree,mshtml=" "$WINE64" wineboot.exe --init >/dev/null 2>&1 || true
            "$(dirname "$WINE64")/wineserver" -w 2>/dev/null || true
            touch "$prefix/.xunwind-ready"
        fi
    ) 9>"$prefix.lock"
fi
# The program writes its dump relative to its working directory.
dir=$(cd "$(dirname "$dump")" && pwd)
exe=$(cd "$(dirname "$exe")" && pwd)/$(basename "$exe")
cd "$dir"
XUNWIND_MODE=$mode XUNWIND_DUMP=$(basename "$dump") exec timeout 120 "$WINE64" "$exe"
