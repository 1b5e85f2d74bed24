# Sourced by bin/dejavu and bin/test: finds a Java 25+ JDK and exports JAVA_HOME, without relying on the default java.
java_major() { "$1/bin/java" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p'; }
find_jdk() {
  local candidate
  for candidate in "${JAVA_HOME:-}" /usr/lib/jvm/temurin-25-jdk-amd64 /usr/lib/jvm/*25* /usr/lib/jvm/*; do
    if [ -n "$candidate" ] && [ -x "$candidate/bin/java" ] && [ "$(java_major "$candidate")" -ge 25 ] 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  return 1
}
JAVA_HOME=$(find_jdk) || { echo "dejavu: needs a Java 25 JDK; none found (set JAVA_HOME to one)" >&2; exit 1; }
export JAVA_HOME
