#!/bin/sh
# Rebuilds probe.exe from probe.c (needs the mingw-w64 cross compiler, Debian gcc-mingw-w64-x86-64).
set -e
cd "$(dirname "$0")"
${CC:-x86_64-w64-mingw32-gcc} -O2 -Wall -Wextra -Wno-cast-function-type -s -Wl,--no-insert-timestamp -o probe.exe probe.c
# The test image for probe.exe itself (test/README.md); deterministic: no timestamp, fixed base.
${CC:-x86_64-w64-mingw32-gcc} -nostdlib -shared -Wl,-e,entry -Wl,--no-insert-timestamp \
    -Wl,--image-base,0x10000000 -o test/synth.dll test/synth.S
