#!/bin/sh
# Runs the Wine-side oracle: probe.exe under wine64, headless, in a private reusable WINEPREFIX.
#
#   run.sh [probe options] FILE LIST        LIST: "<func-begin-rva> <pc-rva> [kind]" lines, or -
#   run.sh [probe options] --batch SPEC     SPEC: "FILE<TAB>LIST<TAB>OUT" lines (one wine start)
#
# Environment:
#   XUNWIND_WINEPREFIX  the prefix to use (default: ${TMPDIR:-/tmp}/xunwind-wineprefix-<uid>).
#                       Created on first use (11-15 s, ~700 MB), then reused: a run then costs
#                       0.3-0.5 s to start wine, ~0.03 s while the previous run's wineserver lingers.
#   WINE64              the wine64 loader (default: /usr/lib/wine/wine64, Debian's wine64 8.0).
#
# Output: the U/E lines on stdout (README.md); a summary and diagnostics on stderr.
# FILE, LIST, SPEC (and the paths inside SPEC) may be Unix paths, absolute or relative.
set -e
here=$(cd "$(dirname "$0")" && pwd)
WINE64=${WINE64:-/usr/lib/wine/wine64}
prefix=${XUNWIND_WINEPREFIX:-${TMPDIR:-/tmp}/xunwind-wineprefix-$(id -u)}

if [ ! -x "$WINE64" ]; then
    echo "run.sh: $WINE64 not found (apt-get install wine64)" >&2
    exit 2
fi
# Build when missing; rebuild after probe.c changed when the cross compiler is at hand
# (the build is deterministic, so a checked-in probe.exe stays byte-identical).
if [ ! -f "$here/probe.exe" ]; then
    "$here/build.sh" >&2
elif [ "$here/probe.c" -nt "$here/probe.exe" ] && command -v x86_64-w64-mingw32-gcc >/dev/null; then
    "$here/build.sh" >&2
fi

export WINEPREFIX="$prefix" WINEARCH=win64 WINEDEBUG=-all
# Headless: never talk to a display.
unset DISPLAY WAYLAND_DISPLAY

if [ ! -f "$prefix/.xunwind-ready" ]; then
    mkdir -p "$(dirname "$prefix")"
    (
        # Serialise the first start between concurrent callers.
        flock 9
        if [ ! -f "$prefix/.xunwind-ready" ]; then
            echo "run.sh: creating WINEPREFIX $prefix (first start, a few seconds)" >&2
            start=$(date +%s)
            # No Mono/Gecko install prompts; nothing here needs them.
            WINEDLLOVERRIDES="mscoree,mshtml=" "$WINE64" wineboot.exe --init >/dev/null 2>&1 || true
            # wineboot finishes in the background; wait for its wineserver to go idle.
            "$(dirname "$WINE64")/wineserver" -w 2>/dev/null || true
            touch "$prefix/.xunwind-ready"
            echo "run.sh: prefix ready in $(( $(date +%s) - start )) s" >&2
        fi
    ) 9>"$prefix.lock"
fi

# Absolute Unix paths: probe.exe maps them to DOS paths with wine_get_dos_file_name.
abs() {
    case "$1" in
        -|/*) printf '%s\n' "$1" ;;
        *) printf '%s/%s\n' "$(pwd)" "$1" ;;
    esac
}
n=$#
i=0
while [ $i -lt $n ]; do
    a=$1
    shift
    i=$((i + 1))
    case "$a" in
        --batch)
            set -- "$@" "$a" "$(abs "$1")"
            shift
            i=$((i + 1))
            ;;
        --*) set -- "$@" "$a" ;;
        *) set -- "$@" "$(abs "$a")" ;;
    esac
done
exec "$WINE64" "$here/probe.exe" "$@"
