#!/usr/bin/env bash
# Prepare a Debian 12 machine to run ldapdkim's whole test suite.
#
#   bash tests/setup.sh        (as root, or as a user with sudo)
#
# Idempotent; a second run only checks and takes a few seconds. It:
#   1. installs the system packages the tests drive (slapd, postfix, OpenDKIM,
#      miltertest, unbound, Knot DNS and nsupdate, Perl Mail::DKIM, build
#      headers for python-ldap and pymilter), preseeding postfix so nothing is
#      asked;
#   2. leaves no system instance of slapd, postfix, opendkim, unbound or knot that
#      it installed running or enabled: the tests start their own on free
#      loopback ports (an instance that was there before is left alone);
#   3. unpacks Debian 13's libmail-dkim-perl (pure Perl, verifies
#      ed25519-sha256, RFC 8463) into tests/.cache/mail-dkim without
#      installing it; tests/harness/verifiers.py puts it first in PERL5LIB;
#   4. unpacks this release's sendmail-bin and sendmail-cf into
#      tests/.cache/sendmail without installing them (sendmail-bin conflicts
#      with postfix: installing it would remove postfix);
#      tests/harness/sendmail.py runs that Sendmail;
#   5. creates .venv at the repository root on Debian's own Python, seeing
#      Debian's python3-* libraries (the ones the Debian package depends on),
#      and installs ldapdkim (editable) and the test tools in it.
set -euo pipefail

started=$(date +%s)
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache_dir="$repo_root/tests/.cache/mail-dkim"
sendmail_dir="$repo_root/tests/.cache/sendmail"
venv="$repo_root/.venv"
export DEBIAN_FRONTEND=noninteractive

packages=(
    python3 python3-venv python3-dev gcc libldap-dev libsasl2-dev libmilter-dev
    # ldapdkim's runtime libraries, as Debian ships them (debian/control), and
    # dkimpy and PyNaCl, the tests' independent oracles (not the milter's)
    python3-ldap python3-milter python3-dkim python3-nacl python3-cryptography
    python3-cachetools python3-dnspython python3-idna python3-authres
    python3-prometheus-client python3-cffi python3-lmdb
    # the public suffix list, for SenderAlignment organizational (debian/control Depends)
    publicsuffix
    # building the Debian package (tests/integration/test_debian_package.py);
    # systemd-analyze checks the unit, man -w finds the installed pages
    dpkg-dev debhelper dh-python pybuild-plugin-pyproject python3-setuptools python3-all
    # dpkg-checkbuilddeps wants it (a Recommends of dpkg-dev)
    build-essential
    # git lists the checkout's files that the package is built from
    git
    systemd man-db
    slapd ldap-utils openssl
    # the manual pages are checked with groff (tests/unit/test_manpages.py)
    groff-base
    libmail-dkim-perl libnet-dns-perl libcryptx-perl
    libmail-authenticationresults-perl libcrypt-openssl-rsa-perl
    opendkim opendkim-tools miltertest unbound postfix
    # Knot DNS takes the dynamic updates of dns-records --apply; nsupdate feeds it too
    knot bind9-dnsutils
    # for the unpacked Sendmail (step 4): m4 builds sendmail.cf, the rest it links
    m4 liblockfile1 libwrap0 libnsl2 libdb5.3
    # keys in a PKCS #11 token: SoftHSM2, pkcs11-tool and PyKCS11 (tests/harness/softhsm.py)
    softhsm2 opensc python3-pykcs11
    # the enterprise directories: 389 Directory Server (tests/harness/ds389.py)
    # and a Samba Active Directory domain controller (tests/harness/samba_ad.py)
    389-ds-base python3-lib389 samba samba-ad-dc samba-dsdb-modules winbind ldb-tools
    # the AD schema files 'samba-tool domain provision' reads (a Recommends of samba-ad-dc)
    samba-ad-provision
)
# Daemons the packages above may start; stopped if this run installed them.
services=(slapd postfix opendkim unbound unbound-resolvconf knot smbd nmbd samba-ad-dc winbind)

log() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }
# shellcheck source=tests/debian-mirror.sh
. "$repo_root/tests/debian-mirror.sh"

# Run a command as root: directly, or through sudo when we are not root.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo env DEBIAN_FRONTEND=noninteractive "$@"
    else
        die "need root for '$*': run as root or install sudo"
    fi
}

missing_packages() {
    local pkg
    for pkg in "${packages[@]}"; do
        if [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" != "install ok installed" ]; then
            printf '%s\n' "$pkg"
        fi
    done
}

# --- 1. system packages -------------------------------------------------------

policy_rc_d=/usr/sbin/policy-rc.d
our_policy_rc_d=no
remove_our_policy_rc_d() {
    if [ "$our_policy_rc_d" = yes ]; then
        as_root rm -f "$policy_rc_d"
        our_policy_rc_d=no
    fi
}
trap remove_our_policy_rc_d EXIT

missing=()
mapfile -t missing < <(missing_packages)
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing: ${missing[*]}"
    # Keep maintainer scripts from starting daemons we would only stop again
    # (unbound on port 53 could even become the system resolver).
    if [ ! -e "$policy_rc_d" ]; then
        printf '#!/bin/sh\n# temporary, from ldapdkim tests/setup.sh\nexit 101\n' \
            | as_root tee "$policy_rc_d" >/dev/null
        as_root chmod 755 "$policy_rc_d"
        our_policy_rc_d=yes
    fi
    echo "postfix postfix/main_mailer_type select No configuration" \
        | as_root debconf-set-selections
    # Wait for another apt or dpkg run instead of failing on its lock.
    as_root apt-get -o DPkg::Lock::Timeout=600 update -q
    as_root apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600 \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${missing[@]}"
    remove_our_policy_rc_d
    mapfile -t still_missing < <(missing_packages)
    [ "${#still_missing[@]}" -eq 0 ] || die "not installed: ${still_missing[*]}"
else
    log "system packages already installed"
fi

# --- 2. no system instances ---------------------------------------------------

installed_now() {
    local pkg
    for pkg in "${missing[@]}"; do
        [ "$pkg" = "${1%-resolvconf}" ] && return 0
    done
    return 1
}

stopped=()
for service in "${services[@]}"; do
    installed_now "$service" || continue
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        if systemctl is-active --quiet "$service" 2>/dev/null; then
            as_root systemctl stop "$service" || true
            stopped+=("$service")
        fi
        if systemctl is-enabled --quiet "$service" 2>/dev/null; then
            as_root systemctl disable --quiet "$service" || true
        fi
    elif [ -x "/etc/init.d/$service" ]; then
        if as_root "/etc/init.d/$service" status >/dev/null 2>&1; then
            as_root "/etc/init.d/$service" stop >/dev/null 2>&1 || true
            stopped+=("$service")
        fi
    fi
done
if [ "${#stopped[@]}" -gt 0 ]; then
    log "stopped system instances: ${stopped[*]}"
fi

# --- 3. Debian 13's Mail::DKIM, unpacked, not installed ---------------------------

# Download packages into WORK/deb with a private apt state: the machine's own
# sources, lists and cache are untouched.
#   apt_download_private WORK SUITE... -- PACKAGE...
apt_download_private() {
    local work=$1 mirror signed_by="" suite suites=()
    shift
    while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do
        suites+=("$1")
        shift
    done
    shift
    mirror=$(debian_mirror)
    if [ -r /usr/share/keyrings/debian-archive-keyring.gpg ]; then
        signed_by="[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
    fi
    mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/deb"
    for suite in "${suites[@]}"; do
        printf 'deb %s%s %s main\n' "$signed_by" "$mirror" "$suite"
    done >"$work/sources.list"
    local apt_opts=(
        -o "Dir::Etc::sourcelist=$work/sources.list" -o "Dir::Etc::sourceparts=-"
        -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache"
        -o "APT::Sandbox::User=root" -q
    )
    log "fetching $* from $mirror (${suites[*]})"
    as_root apt-get "${apt_opts[@]}" update >/dev/null
    (cd "$work/deb" && as_root apt-get "${apt_opts[@]}" download "$@" >/dev/null)
}

fetch_mail_dkim() {
    local work deb
    work=$(mktemp -d)
    # shellcheck disable=SC2064  # expand $work now
    trap "rm -rf '$work'; remove_our_policy_rc_d" EXIT
    apt_download_private "$work" trixie -- libmail-dkim-perl
    deb=$(find "$work/deb" -name 'libmail-dkim-perl_*_all.deb' | head -n 1)
    [ -n "$deb" ] || die "apt-get download libmail-dkim-perl produced no .deb"
    mkdir -p "$(dirname "$cache_dir")"
    rm -rf "$cache_dir.new"
    dpkg-deb -x "$deb" "$cache_dir.new"
    basename "$deb" >"$cache_dir.new/SOURCE"
    rm -rf "$cache_dir"
    mv "$cache_dir.new" "$cache_dir"
    rm -rf "$work"
    trap remove_our_policy_rc_d EXIT
}

if [ -f "$cache_dir/usr/share/perl5/Mail/DKIM.pm" ]; then
    log "Debian 13 Mail::DKIM already in tests/.cache/mail-dkim"
else
    fetch_mail_dkim
fi
mail_dkim_new=$(PERL5LIB="$cache_dir/usr/share/perl5" perl -e \
    'use Mail::DKIM; use Mail::DKIM::Algorithm::ed25519_sha256; use Crypt::PK::Ed25519; print $Mail::DKIM::VERSION' \
    2>/dev/null) || die "the Mail::DKIM in $cache_dir does not load with ed25519 support; delete that directory and rerun"

# --- 4. this release's Sendmail, unpacked, not installed --------------------------

# dpkg-deb -x only: no maintainer scripts, nothing in /etc/mail or the dpkg
# database, and postfix stays (sendmail-bin Conflicts: mail-transport-agent).
fetch_sendmail() {
    local work codename pkg deb
    work=$(mktemp -d)
    # shellcheck disable=SC2064  # expand $work now
    trap "rm -rf '$work'; remove_our_policy_rc_d" EXIT
    # The same release as the machine, so its libraries fit the binary.
    codename=$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-}")
    [ -n "$codename" ] || die "cannot tell this machine's Debian release from /etc/os-release"
    apt_download_private "$work" "$codename" "$codename-updates" -- sendmail-bin sendmail-cf
    mkdir -p "$(dirname "$sendmail_dir")"
    rm -rf "$sendmail_dir.new"
    mkdir "$sendmail_dir.new"
    for pkg in sendmail-bin sendmail-cf; do
        deb=$(find "$work/deb" -name "${pkg}_*.deb" | head -n 1)
        [ -n "$deb" ] || die "apt-get download $pkg produced no .deb"
        dpkg-deb -x "$deb" "$sendmail_dir.new"
        basename "$deb" >>"$sendmail_dir.new/SOURCE"
    done
    rm -rf "$sendmail_dir"
    mv "$sendmail_dir.new" "$sendmail_dir"
    rm -rf "$work"
    trap remove_our_policy_rc_d EXIT
}

sendmail_bin="$sendmail_dir/usr/libexec/sendmail/sendmail"
if [ -x "$sendmail_bin" ] && [ -f "$sendmail_dir/usr/share/sendmail/cf/m4/cf.m4" ]; then
    log "Sendmail already in tests/.cache/sendmail"
else
    fetch_sendmail
fi
# Not "sendmail -d0.1": outside the tests' namespaces it can sleep 60 s on an
# unqualified host name before printing anything.
missing_libs=$(ldd "$sendmail_bin" | awk '/not found/ { print $1 }' | paste -sd' ')
[ -z "$missing_libs" ] || die "the unpacked sendmail needs $missing_libs; install the packages that provide them"
sendmail_version=$(sed -n 's/^sendmail-bin_\([^_]*\)_.*/\1/p' "$sendmail_dir/SOURCE")
if ! as_root unshare --uts --mount true 2>/dev/null; then
    log "warning: cannot create UTS and mount namespaces here; the Sendmail tests need them (root or CAP_SYS_ADMIN)"
fi

# --- 5. Python virtual environment ------------------------------------------------

# The suite runs against Debian's python3-* packages: the versions the Debian
# package depends on.  pip adds only what Debian lacks (the test tools).
system_python=/usr/bin/python3
if [ -x "$venv/bin/python" ] && ! grep -qx 'include-system-site-packages = true' "$venv/pyvenv.cfg"; then
    log "recreating $venv on $system_python with Debian's libraries"
    rm -rf "$venv"
fi
if [ ! -x "$venv/bin/python" ]; then
    log "creating $venv"
    "$system_python" -m venv --system-site-packages "$venv"
fi
# Reinstall only when pyproject.toml changed since the last successful install.
stamp="$venv/.ldapdkim-setup-stamp"
want=$(sha256sum "$repo_root/pyproject.toml" | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    log "installing ldapdkim[test] into .venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$repo_root[test]"
    echo "$want" >"$stamp"
else
    log ".venv already has ldapdkim[test] for this pyproject.toml"
fi
# Every runtime library, and the tests' oracles dkimpy and PyNaCl, must be
# Debian's: pip would fetch a newer one from PyPI if Debian's were missing or
# below a floor in pyproject.toml.
not_debian=$("$venv/bin/python" - <<'PY'
import importlib
for name in ("ldap", "milter", "dkim", "nacl", "cryptography", "cachetools", "dns",
             "idna", "authres", "prometheus_client", "cffi", "lmdb", "PyKCS11"):
    path = importlib.import_module(name).__file__ or ""
    if not path.startswith("/usr/lib/python3/dist-packages/"):
        print(f"{name} ({path})")
PY
) || die "cannot import ldapdkim's libraries in .venv"
[ -z "$not_debian" ] || die "not Debian's packages in .venv: $not_debian; install python3-* or lower the floors"

# --- summary ---------------------------------------------------------------------

version_of() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo "?"; }
cat <<EOF
setup: done in $(($(date +%s) - started)) s
  python       $("$venv/bin/python" -c 'import sys; print(sys.version.split()[0])') in .venv
  slapd        $(version_of slapd)
  postfix      $(version_of postfix)
  opendkim     $(version_of opendkim)   miltertest $(version_of miltertest)
  unbound      $(version_of unbound)
  knot         $(version_of knot)   nsupdate $(version_of bind9-dnsutils)
  Mail::DKIM   $(version_of libmail-dkim-perl) (system, rsa only), $mail_dkim_new (tests/.cache, ed25519)
  sendmail     ${sendmail_version:-?} (tests/.cache, unpacked, not installed)
EOF
