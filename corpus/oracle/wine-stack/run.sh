#!/bin/sh
# Runs a stackprog build under wine64, headless, in the shared private WINEPREFIX; prints the
# program's F/T/D lines (see stackprog.c).
#   run.sh EXE MODE DUMP        MODE: fault | thread; DUMP: where the minidump goes (Unix path)
# Environment: as ../wine-run.sh (XUNWIND_WINEPREFIX, WINE64).
exec "$(dirname "$0")/../wine-run.sh" "$@"
