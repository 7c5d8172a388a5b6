#!/usr/bin/env bash
# Builds the Debian package with cargo-deb and inspects it:
#   - the file list (`dpkg-deb -c`) has the binary, the conffile, the unit,
#     completions for bash/zsh/fish, man pages and the docs;
#   - /etc/authproxy/authproxy.toml is a conffile (dpkg keeps local edits);
#   - lintian (from Debian's packages) has no errors;
#   - unpacked into a throwaway root (`dpkg -x`), its binary runs
#     `--version` and `check` on the config it ships, and the unit it ships
#     passes `systemd-analyze verify` with that binary.
# Run by .ci/run; by hand: `bash .ci/package-deb.sh` (leaves the .deb in
# target/debian/).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

fail() {
    echo "package-deb: FAILED: $*" >&2
    exit 1
}

CARGO_DEB_VERSION=3.8.0
if ! cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
    echo "::: cargo install cargo-deb $CARGO_DEB_VERSION"
    cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked --quiet
fi

echo "::: cargo build --release"
cargo build --release --locked --quiet
bin=target/release/authproxy

# The code a starting proxy runs laid out together (build.rs, by
# build/link-order.txt; without it idle RSS is 10.4 MiB instead of 6.2,
# README, Performance). Two checks: the layout was applied (the binary's
# first function is one of the file's), and the file is not stale. The
# linker skips names it no longer finds and still puts the others first,
# so the first check alone passed a stale file that matched 107 of its
# 1,304 names (idle RSS 11.0 MiB). 90%: a fresh file matches all of its
# names (1,215 of 1,215 at 9112939); a stale one about a tenth.
symbols=$(nm -n --defined-only "$bin")
first=$(awk '$2 ~ /^[tT]$/ && !f {f = $3} END {print f}' <<<"$symbols")
grep -qxF -- "$first" build/link-order.txt ||
    fail "the binary is not laid out by build/link-order.txt (first function: $first)"
listed=$(sort -u build/link-order.txt | wc -l)
found=$(awk '{print $3}' <<<"$symbols" | sort -u | comm -12 - <(sort -u build/link-order.txt) | wc -l)
((found * 10 >= listed * 9)) ||
    fail "build/link-order.txt is stale: $found of its $listed functions are in the binary (remake it: bash build/link-order.sh, then commit it)"
echo "layout: by build/link-order.txt (first function $first; $found of $listed functions found)"

# Completions and man pages from the binary itself: they cannot drift from
# its flags.
assets=target/deb-assets
rm -rf "$assets"
mkdir -p "$assets/completions" "$assets/man"
"$bin" completions bash >"$assets/completions/authproxy.bash"
"$bin" completions zsh >"$assets/completions/_authproxy"
"$bin" completions fish >"$assets/completions/authproxy.fish"
"$bin" man --out-dir "$assets/man"
gzip -9n "$assets"/man/*.1

echo "::: cargo deb"
deb=$(cargo deb --no-build --strip --quiet | tail -n 1)
[ -f "$deb" ] || fail "cargo deb made no package (said: $deb)"
echo "package: $deb ($(du -h "$deb" | cut -f1))"

listing=$(dpkg-deb -c "$deb")
for path in \
    ./usr/bin/authproxy \
    ./etc/authproxy/authproxy.toml \
    ./lib/systemd/system/authproxy.service \
    ./usr/share/bash-completion/completions/authproxy \
    ./usr/share/zsh/vendor-completions/_authproxy \
    ./usr/share/fish/vendor_completions.d/authproxy.fish \
    ./usr/share/man/man1/authproxy.1.gz \
    ./usr/share/man/man1/authproxy-check.1.gz \
    ./usr/share/doc/authproxy/copyright \
    ./usr/share/doc/authproxy/SPEC.md; do
    grep -q " $path\$" <<<"$listing" || fail "$path is not in the package"
done
dpkg-deb -I "$deb" conffiles | grep -qx "/etc/authproxy/authproxy.toml" ||
    fail "/etc/authproxy/authproxy.toml is not a conffile"
echo "contents: binary, conffile, unit, completions, man pages, docs"

if command -v lintian >/dev/null 2>&1; then
    # Errors fail the build; warnings are printed for the record. Tags
    # that do not apply to a package built outside Debian's archive: no
    # Debian changelog (CHANGELOG.md is the project's), and the unit is
    # shipped but not enabled on install (an operator configures routes
    # first).
    lintian_out=$(lintian --tag-display-limit 0 \
        --suppress-tags no-changelog,debian-changelog-file-missing-or-wrong-name,systemd-service-file-missing-install-key,maintainer-script-calls-systemctl \
        "$deb" 2>&1 || true)
    [ -n "$lintian_out" ] && echo "$lintian_out"
    if grep -q "^E: " <<<"$lintian_out"; then
        fail "lintian reports errors"
    fi
    echo "lintian: no errors ($(grep -c '^W: ' <<<"$lintian_out" || true) warnings)"
else
    echo "lintian: not installed; skipped"
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
dpkg -x "$deb" "$root"
"$root/usr/bin/authproxy" --version | grep -q "^authproxy " || fail "the packaged binary does not run"
env -i PATH="$PATH" "$root/usr/bin/authproxy" check --config "$root/etc/authproxy/authproxy.toml" >/dev/null ||
    fail "authproxy check refuses the config the package ships"
if command -v systemd-analyze >/dev/null 2>&1; then
    sed "s|/usr/bin/authproxy|$root/usr/bin/authproxy|" "$root/lib/systemd/system/authproxy.service" >"$root/authproxy.service"
    systemd-analyze verify "$root/authproxy.service" || fail "systemd-analyze verify on the packaged unit"
fi
echo "installed into a throwaway root: --version, check on the shipped config, unit verified"
echo "::: package OK"
