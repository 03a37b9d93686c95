#!/bin/sh
# Self-test of probe.exe: probes synth.dll (synth.S) and compares with synth.expected, whose lines
# were checked by hand against the unwind codes (README.md, "Self-test").
set -e
here=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp)
trap 'rm -f "$out" "$out.n"' EXIT
# Registers of a faulting line are whatever Wine left when the fault hit: not compared.
norm() {
    awk '/ fault=1$/ { print $1, $2, $3, $4, $5, $NF; next } { print }' "$1"
}
"$here/../run.sh" --quiet "$here/synth.dll" "$here/synth.lst" > "$out"
norm "$out" > "$out.n"
if norm "$here/synth.expected" | diff -u - "$out.n"; then
    echo "wine-probe self-test: $(wc -l < "$out") lines as expected"
else
    echo "wine-probe self-test: FAILED" >&2
    exit 1
fi
