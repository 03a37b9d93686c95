#!/usr/bin/env bash
# Builds the Wine stack oracle's test program (stackprog.c) into OUTDIR:
#   stackprog-O0.exe, stackprog-O2.exe   mingw-w64 gcc (GNU ABI; COFF symbol table, no PDB)
#   stackprog-msvc.exe, stackprog-msvc.pdb
#                                        clang-14 + lld-link-14 (MSVC ABI, no C runtime, a PDB;
#                                        imports through the .def files here and llvm-dlltool-14)
# Tools (Debian 12): gcc-mingw-w64-x86-64, clang-14, lld-14, llvm-14. Takes a few seconds.
#   build.sh OUTDIR [gnu|msvc|all]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build.sh OUTDIR [gnu|msvc|all]}
what=${2:-all}
mkdir -p "$out"
out=$(cd "$out" && pwd)
CC=${MINGW_CC:-x86_64-w64-mingw32-gcc}
CLANG=${CLANG:-clang-14}
LLD_LINK=${LLD_LINK:-lld-link-14}
DLLTOOL=${DLLTOOL:-llvm-dlltool-14}

if [ "$what" != msvc ]; then
    for o in O0 O2; do
        "$CC" -$o -Wall -o "$out/stackprog-$o.exe" "$here/stackprog.c" -ldbghelp
    done
fi
if [ "$what" != gnu ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    for d in kernel32 ntdll dbghelp msvcrt; do
        "$DLLTOOL" -m i386:x86-64 -d "$here/$d.def" -l "$tmp/$d.lib"
    done
    (cd "$here" && "$CLANG" --target=x86_64-pc-windows-msvc -DXUNWIND_NO_CRT -O2 -g -gcodeview \
        -fno-stack-protector -c stackprog.c -o "$tmp/stackprog.obj")
    "$LLD_LINK" /nologo /nodefaultlib /entry:entry /subsystem:console /machine:x64 /debug /pdbaltpath:%_PDB% \
        /out:"$out/stackprog-msvc.exe" /pdb:"$out/stackprog-msvc.pdb" \
        "$tmp/stackprog.obj" "$tmp"/kernel32.lib "$tmp"/ntdll.lib "$tmp"/dbghelp.lib "$tmp"/msvcrt.lib
fi
