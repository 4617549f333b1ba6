#!/usr/bin/env bash
# Runs every RateEngine test: the unit, contract, property and stress suites (the core's, and the Redis mode's on a
# real redis-server); then checks the three packages (README, XML docs, symbols) and runs the benchmark smoke run, so
# that what the README tells a user to install or run never rots.
# Usage: tests/run.sh [extra dotnet test args]
set -euo pipefail
cd "$(dirname "$0")/.."

export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

# The Redis tests run a real redis-server on 127.0.0.1; install Debian's when it is missing (they fail, never skip, without it).
if ! command -v redis-server >/dev/null 2>&1; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  if ! { $sudo apt-get update -qq && $sudo apt-get install -y -qq redis-server >/dev/null; }; then
    echo "could not install redis-server (apt-get update, then apt-get install -y redis-server); the Redis tests need it" >&2
    exit 1
  fi
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT

status=0
# A test that hangs (a livelocked CAS loop is the bug class the stress tests hunt) is named and dumped after 5 minutes,
# rather than holding CI to its time limit without saying which.
dotnet test RateEngine.sln -c Release --logger "console;verbosity=normal" --blame-hang-timeout 5m "$@" 2>&1 | tee "$log" || status=$?

# One plain closing line that any CI can read, summed over the test assemblies.
sum() {
  awk -v key="$1" '{ while (match($0, key ": +[0-9]+")) { v = substr($0, RSTART, RLENGTH); gsub(/[^0-9]/, "", v); n += v; $0 = substr($0, RSTART + RLENGTH) } } END { print n + 0 }' "$log"
}
passed=$(sum Passed)
failed=$(sum Failed)
skipped=$(sum Skipped)

# The packages: RateEngine, RateEngine.Redis and RateEngine.AspNetCore, each with the README and its XML docs.
if [ "$status" -eq 0 ]; then
  packages=$(mktemp -d)
  for package in RateEngine RateEngine.Redis RateEngine.AspNetCore; do
    dotnet pack "src/$package" -c Release --no-build -o "$packages" -p:CI=true >/dev/null || status=$?
    nupkg=$(ls "$packages"/$package.[0-9]*.nupkg 2>/dev/null | grep -v snupkg | head -1)
    # A zip's directory holds its entry names uncompressed: grep finds them without unzip on a bare machine.
    if [ -z "$nupkg" ] || ! grep -aq "README.md" "$nupkg" || ! grep -aq "lib/net10.0/$package.xml" "$nupkg" \
       || [ ! -f "${nupkg%.nupkg}.snupkg" ]; then
      echo "package $package: missing, or without its README, XML docs or symbols" >&2
      status=1
    fi
  done
  rm -rf "$packages"
fi

if [ -d bench/RateEngine.Benchmarks ] && [ "$status" -eq 0 ]; then
  dotnet run -c Release --project bench/RateEngine.Benchmarks -- --smoke || status=$?
fi

# A CI log is often kept only by its tail: repeat each failed test with its message just above the closing line.
if [ "${failed:-0}" -ne 0 ]; then
  echo "failed tests:"
  awk '/^ +Failed [A-Za-z_]/ { show = 1; n = 0 } show && n < 25 { print; n++ } /^ +(Passed|Skipped) / { show = 0 }' "$log"
fi

echo "tests: ${passed:-0} passed, ${failed:-0} failed, ${skipped:-0} skipped"
exit "$status"
