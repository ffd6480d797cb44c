#!/usr/bin/env bash
# make test-windows: the Windows test binaries of filelock, coord (file
# backend) and integration (the coord CLI as Windows processes), run under
# Wine in a throwaway prefix. Installs Wine and mingw-w64 with apt-get when
# missing (as root). Fails on any failing test.
#
# Go 1.24+ needs ProcessPrng from bcryptprimitives.dll, which Wine 8.0
# lacks: prng/ is a tiny stand-in, built here with mingw-w64 and put in the
# prefix's system32 (the runtime loads it from there only).
set -euo pipefail
cd "$(dirname "$0")/../.."
GO=${GO:-go}

need=()
command -v wine >/dev/null && [ -e /usr/lib/wine/wine64 ] || need+=(wine64 wine)
command -v x86_64-w64-mingw32-gcc >/dev/null || need+=(gcc-mingw-w64-x86-64)
if [ ${#need[@]} -gt 0 ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "coord: make test-windows needs ${need[*]}: run it as root, or install them (apt-get install ${need[*]})" >&2
		exit 1
	fi
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}"
fi

tmp=$(mktemp -d /tmp/coord-wine-XXXXXX)
export WINEPREFIX=$tmp/prefix WINEDEBUG=-all WINEDLLOVERRIDES=bcryptprimitives=n WINEARCH=win64
trap 'wineserver -k 2>/dev/null; rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

start=$(date +%s)
x86_64-w64-mingw32-gcc -shared -O2 -s -o "$tmp/bcryptprimitives.dll" \
	internal/wintest/prng/processprng.c internal/wintest/prng/processprng.def -ladvapi32
# The prefix starts in the background while the test binaries build.
(wineboot -i >"$tmp/wineboot.log" 2>&1) &
boot=$!
bin=$tmp/bin
GOOS=windows GOARCH=amd64 $GO build -o "$bin/" ./cmd/coord
for p in filelock coord integration; do
	GOOS=windows GOARCH=amd64 $GO test -c -o "$bin/$p.test.exe" "./$p"
done
if ! wait $boot; then
	cat "$tmp/wineboot.log" >&2
	exit 1
fi
cp "$tmp/bcryptprimitives.dll" "$WINEPREFIX/drive_c/windows/system32/"
echo "wine $(wine --version): prefix and test binaries ready in $(($(date +%s) - start)) s"

# Each package's tests run in its directory (testdata), coord on the file
# backend only (an embedded etcd under Wine is not what this lane tests).
coord_exe=$(winepath -w "$bin/coord.exe")
rc=0
for p in filelock coord integration; do
	log=$tmp/$p.log
	t0=$(date +%s)
	(cd "$p" && COORD_TEST_BACKENDS=file COORD_TEST_BIN="$coord_exe" \
		wine "$bin/$p.test.exe" -test.v -test.count=1 -test.timeout=10m) >"$log" 2>&1 || {
		rc=1
		cat "$log"
	}
	# Each test's outcome; a skip with its reason (the test's last line).
	awk '/^=== (RUN|CONT)/ { cur = $3; next }
		/^ *--- (PASS|FAIL)/ { print "  " $2 " " $3; next }
		/^ *--- SKIP/ { print "  SKIP: " $3 " " why[$3]; next }
		{ sub(/^ +([a-z_]+\.go:[0-9]+: )?/, ""); why[cur] = $0 }' "$log"
	# The figures the contract tests measured (kill to grant, and so on).
	grep -hE '^ +windows_test\.go:[0-9]+: ' "$log" | grep -v 'under Wine' |
		sed -E 's/^ +windows_test\.go:[0-9]+: /  figure: /' || true
	echo "$p: $(grep -cE '^ *--- PASS' "$log") passed, $(grep -cE '^ *--- SKIP' "$log") skipped, $(grep -cE '^ *--- FAIL' "$log") failed ($(($(date +%s) - t0)) s)"
done
echo "make test-windows: $(($(date +%s) - start)) s"
exit $rc
