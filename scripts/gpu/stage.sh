#!/usr/bin/env bash
# Fills a device folder (default .device of the repository, git-ignored) with what gpu-check.sh needs on the GPU machine:
# the fat jar, the compiled tests and a JUnit launcher, the tiny golden models and these scripts. Run after
# `mvn -DskipTests package test-compile`; jre.tar.xz comes from ../shared/device/make-jre.sh.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
dst=${1:-$root/.device}
shared=${SHARED:-$root/../shared}
m2=${M2:-$HOME/.m2/repository}
mkdir -p "$dst/junit"
cp "$root/target/dejavu-serve.jar" "$dst/"
rm -rf "$dst/test-classes" && cp -r "$root/target/test-classes" "$dst/test-classes"
cp "$root"/scripts/gpu/*.py "$root"/scripts/gpu/gpu-check.sh "$dst/"
for jar in org/junit/platform/junit-platform-launcher/1.13.4/junit-platform-launcher-1.13.4.jar \
           org/junit/platform/junit-platform-engine/1.13.4/junit-platform-engine-1.13.4.jar \
           org/junit/platform/junit-platform-commons/1.13.4/junit-platform-commons-1.13.4.jar \
           org/junit/jupiter/junit-jupiter-api/5.13.4/junit-jupiter-api-5.13.4.jar \
           org/junit/jupiter/junit-jupiter-engine/5.13.4/junit-jupiter-engine-5.13.4.jar \
           org/junit/jupiter/junit-jupiter-params/5.13.4/junit-jupiter-params-5.13.4.jar \
           org/opentest4j/opentest4j/1.3.0/opentest4j-1.3.0.jar \
           org/apiguardian/apiguardian-api/1.1.2/apiguardian-api-1.1.2.jar; do
  cp "$m2/$jar" "$dst/junit/"
done
javac -d "$dst" -cp "$(ls "$dst"/junit/*.jar | tr '\n' ':')" "$root/scripts/gpu/GpuTestMain.java"
# The golden models travel compressed (what travels is limited to 64 MiB); gpu-check.sh unpacks them.
rm -rf "$dst/shared"
tar cJf "$dst/shared.tar.xz" -C "$shared/.." shared/golden/opt-tiny-preln shared/golden/opt-tiny-postln-proj \
  shared/golden/opt-tiny-preln-reference.json shared/golden/opt-tiny-postln-proj-reference.json
# opt-mini's checkpoint is too large to travel: the service load test makes its shapes with random weights there.
rm -rf "$dst/mini" && mkdir -p "$dst/mini"
cp "$shared"/models/opt-mini/{config.json,generation_config.json,tokenizer_config.json,tokenizer.json,vocab.json,merges.txt} \
  "$dst/mini/"
du -sh "$dst"
