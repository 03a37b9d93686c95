#!/bin/sh
# Runs a dispatch fixture (corpus/fixtures/dispatch) under wine64, headless, in the shared
# private WINEPREFIX.
#
#   run.sh EXE MODE DUMP
#
# The program prints its R lines (what ran, in order) on stdout and writes DUMP (a minidump at
# the first-chance exception), DUMP.ctx and DUMP.stack beside it (see report.h).
# Environment: as ../wine-run.sh (XUNWIND_WINEPREFIX, WINE64).
exec "$(dirname "$0")/../wine-run.sh" "$@"
