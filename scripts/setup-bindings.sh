#!/usr/bin/env bash
# Installs what the mobile binding's JVM test needs. Idempotent: each step checks what is there
# and does nothing when it is (a second run prints only "ok").
#
#   a JDK and JNA (Debian openjdk-17-jdk-headless, libjna-java), and the Kotlin/JVM compiler with
#   kotlin-stdlib and kotlinx-coroutines-core-jvm (all three in the npm package kotlin-compiler,
#   pinned by ffi/kotlin-toolchain/package-lock.json). Python needs only CPython (the generated
#   module uses ctypes); uniffi-bindgen is a workspace binary built by cargo.
#
# Afterwards `source target/bindings-env.sh` exports KOTLINC, KOTLIN_STDLIB_JAR,
# KOTLINX_COROUTINES_JAR and JNA_JAR.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
kotlin_dir="${KOTLIN_TOOLCHAIN_DIR:-$root/ffi/kotlin-toolchain}"
kotlin_compiler_version=2.4.20   # ships lib/kotlinx-coroutines-core-jvm.jar (1.8.0)

step() { echo "== bindings setup: $*"; }

apt_wanted=()
command -v javac >/dev/null 2>&1 || apt_wanted+=(openjdk-17-jdk-headless)
[ -f /usr/share/java/jna.jar ] || apt_wanted+=(libjna-java)
if [ "${#apt_wanted[@]}" -gt 0 ]; then
    step "apt-get install ${apt_wanted[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${apt_wanted[@]}"
fi

have="$(cd "$kotlin_dir" && node -p "try { require('kotlin-compiler/package.json').version } catch { '' }" 2>/dev/null || true)"
if [ "$have" != "$kotlin_compiler_version" ]; then
    step "npm kotlin-compiler@$kotlin_compiler_version in $kotlin_dir"
    (cd "$kotlin_dir" && npm ci --no-audit --no-fund)
fi
k="$kotlin_dir/node_modules/kotlin-compiler"
chmod +x "$k/bin/kotlinc" "$k/bin/kotlin" "$k/bin/kotlinc-jvm" 2>/dev/null || true
for f in "$k/bin/kotlinc" "$k/lib/kotlin-stdlib.jar" "$k/lib/kotlinx-coroutines-core-jvm.jar" /usr/share/java/jna.jar; do
    [ -e "$f" ] || { echo "missing after install: $f" >&2; exit 1; }
done

env_file="$root/target/bindings-env.sh"
mkdir -p "$root/target"
{
    echo "# written by scripts/setup-bindings.sh"
    echo "export KOTLINC='$k/bin/kotlinc'"
    echo "export KOTLIN_STDLIB_JAR='$k/lib/kotlin-stdlib.jar'"
    echo "export KOTLINX_COROUTINES_JAR='$k/lib/kotlinx-coroutines-core-jvm.jar'"
    echo "export JNA_JAR=/usr/share/java/jna.jar"
} >"$env_file.tmp"
mv "$env_file.tmp" "$env_file"
step "ok; source $env_file"
