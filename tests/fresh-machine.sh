#!/usr/bin/env bash
# README's Quick start on a fresh Debian 12, as a new user runs it.
#
#   bash tests/fresh-machine.sh        (as root; .ci/run runs it)
#
# The machine the project is developed on has what earlier sessions installed
# by hand; a new user's has not.  This check:
#   1. builds a minimal Debian 12 root (debootstrap --variant=minbase) in a
#      temporary directory, bind-mounts it onto itself (so that tests can make
#      private mount namespaces in it) and mounts /proc, /dev and /sys in it;
#   2. copies in only what reaching this machine's package registries takes:
#      apt's sources (with their keyrings and Acquire settings), /etc/pip.conf,
#      the CA bundle (with the local certificates it holds) and resolv.conf;
#   3. clones this checkout's HEAD (committed work only) to /root/ldapdkim;
#   4. takes README's two Quick start commands from README.md and runs each as
#      root in the root, with a clean environment (env -i PATH=... HOME=/root):
#      command 1 passes when its milter listens on 127.0.0.1:8891 and README's
#      'ldapdkim sign' line signs conf/sample.eml; command 2 passes when pytest
#      ends with no failure and no error, and skips nothing but ALLOWED_SKIPS;
#   5. whatever happened, ends every process in the root, unmounts all it
#      mounted and removes the directory; it prints each step and its time.
# Exit status 0 when both commands pass.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
suite=bookworm
milter_port=8891            # conf/quickstart.conf: Socket inet:8891@127.0.0.1
listen_deadline=900         # seconds for command 1 to install ldapdkim and listen
suite_deadline=3600         # seconds for command 2: setup.sh and the whole suite
clean_path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# Skips command 2 may report, one extended regular expression each, matched
# against pytest's "SKIPPED [N] FILE:LINE: REASON" lines, with the reason it
# is right to skip there.  Anything else skipped fails the check.
ALLOWED_SKIPS=()

started=$(date +%s)
work=""
root=""
step_name=""
step_started=0
report=()
pytest_summary=""

log() { printf 'fresh: %s\n' "$*"; }
die() { printf 'fresh: error: %s\n' "$*" >&2; exit 1; }

# --- steps and their times ------------------------------------------------------

step() {
    end_step
    step_name=$1
    step_started=$(date +%s)
    log "== $step_name"
}

end_step() {
    local outcome=${1:-}
    [ -n "$step_name" ] || return 0
    report+=("$(printf '%5d s  %s%s' "$(($(date +%s) - step_started))" "$step_name" "$outcome")")
    step_name=""
}

# --- processes and mounts in the root ---------------------------------------------

# Every process whose root directory is the fresh root or lies below it
# (Postfix's daemons chroot further, into its queue directory).
root_pids() {
    local proc link
    for proc in /proc/[0-9]*; do
        link=$(readlink "$proc/root" 2>/dev/null) || continue
        case "$link" in
            "$root" | "$root"/*) printf '%s\n' "${proc#/proc/}" ;;
        esac
    done
}

# SIGTERM, then SIGKILL for what is left after 10 s; prints how many there were.
end_root_processes() {
    local pids deadline signal=TERM count=0
    mapfile -t pids < <(root_pids)
    count=${#pids[@]}
    deadline=$(($(date +%s) + 10))
    while [ "${#pids[@]}" -gt 0 ]; do
        kill "-$signal" "${pids[@]}" 2>/dev/null || true
        sleep 0.2
        mapfile -t pids < <(root_pids)
        if [ "$(date +%s)" -ge "$deadline" ]; then
            [ "$signal" = KILL ] && [ "$(date +%s)" -ge $((deadline + 10)) ] && break
            signal=KILL
        fi
    done
    [ "${#pids[@]}" -eq 0 ] || log "warning: processes still in the root: ${pids[*]}" >&2
    printf '%s\n' "$count"
}

mounts_below() {
    findmnt -rn -o TARGET | awk -v dir="$1" 'index($0, dir) == 1'
}

cleanup() {
    local status=$? ended mounts left
    set +e
    if [ -n "$step_name" ]; then
        end_step " (failed)"
    fi
    if [ -n "$work" ]; then
        step "clean up"
        if [ -n "$root" ]; then
            ended=$(end_root_processes)
            mounts=$(mounts_below "$root" | wc -l)
            if [ "$mounts" -gt 0 ]; then
                umount -R "$root" 2>/dev/null || umount -R -l "$root"
            fi
            log "ended $ended processes in the root, unmounted $mounts mounts"
        fi
        left=$(mounts_below "$work")
        if [ -z "$left" ]; then
            rm -rf --one-file-system "$work"
            log "removed $work"
        else
            log "error: still mounted, so $work is kept: $left"
            status=1
        fi
        end_step
    fi
    log "steps:"
    printf 'fresh: %s\n' "${report[@]}"
    if [ "$status" -eq 0 ]; then
        log "passed in $(($(date +%s) - started)) s"
    else
        log "FAILED (status $status) after $(($(date +%s) - started)) s"
    fi
    # Last, as pytest wrote it: the closing line of this output.
    [ -z "$pytest_summary" ] || printf 'fresh: pytest in the fresh root said:\n%s\n' "$pytest_summary"
    exit "$status"
}

# Run a command in the root as root, with nothing of this shell's environment.
in_root() {
    chroot "$root" /usr/bin/env -i PATH="$clean_path" HOME=/root "$@"
}

# 127.0.0.1:PORT in LISTEN state, held by a process in the root?
root_listens_on() {
    local inodes pid fd link inode
    inodes=$(awk -v addr="$(printf '0100007F:%04X' "$1")" \
        '$2 == addr && $4 == "0A" { print $10 }' /proc/net/tcp)
    [ -n "$inodes" ] || return 1
    for pid in $(root_pids); do
        for fd in /proc/"$pid"/fd/*; do
            link=$(readlink "$fd" 2>/dev/null) || continue
            for inode in $inodes; do
                [ "$link" = "socket:[$inode]" ] && return 0
            done
        done
    done
    return 1
}

# Anything at all listening on PORT (any address)?
port_taken() {
    awk -v port="$(printf ':%04X' "$1")" \
        '$4 == "0A" && substr($2, length($2) - 4) == port { found = 1 } END { exit !found }' \
        /proc/net/tcp /proc/net/tcp6
}

# Command 2's output without apt's and pip's: setup.sh's own lines, its
# closing summary, and everything from pytest's first line on.
show_progress() {
    local line pytest=no summary=no
    while IFS= read -r line; do
        [[ "$line" =~ ^=+\ test\ session\ starts ]] && pytest=yes
        [[ "$summary" = yes && "$line" != "  "* ]] && summary=no
        if [[ "$pytest" = yes || "$summary" = yes || "$line" == "setup: "* ]]; then
            printf '%s\n' "$line"
        fi
        [[ "$line" == "setup: done"* ]] && summary=yes
    done
    return 0
}

# The Nth ```sh block of README's "## Quick start" section.
quickstart_block() {
    awk -v want="$1" '
        /^## / { in_section = ($0 == "## Quick start"); next }
        !in_section { next }
        /^```sh[[:space:]]*$/ && !in_block { in_block = 1; n++; next }
        /^```[[:space:]]*$/ && in_block { in_block = 0; next }
        in_block && n == want { print }
    ' "$2"
}

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[ "$(id -u)" -eq 0 ] || die "run as root: it builds a Debian root with debootstrap and chroots into it"

# --- 1. the host's tools ----------------------------------------------------------

step "host tools"
# shellcheck source=tests/debian-mirror.sh
. "$repo_root/tests/debian-mirror.sh"
mirror=$(debian_mirror)
for tool in debootstrap git chroot findmnt; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        [ "$tool" = debootstrap ] || die "$tool is missing on this machine"
        log "installing debootstrap"
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q \
            --no-install-recommends debootstrap >/dev/null
    fi
done
if [ -n "$(git -C "$repo_root" status --porcelain --untracked-files=no)" ]; then
    log "warning: uncommitted changes in $repo_root are not checked: the root gets HEAD"
fi
head=$(git -C "$repo_root" rev-parse HEAD)
log "checking $(git -C "$repo_root" log -1 --format='%h %s' | cut -c1-72)"

# --- 2. a minimal Debian 12 root --------------------------------------------------

step "debootstrap --variant=minbase $suite"
work=$(mktemp -d "${TMPDIR:-/var/tmp}/ldapdkim-fresh.XXXXXX")
chmod 755 "$work"
root="$work/root"
if ! debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1; then
    tail -n 30 "$work/debootstrap.log" >&2
    [ -f "$root/debootstrap/debootstrap.log" ] && tail -n 30 "$root/debootstrap/debootstrap.log" >&2
    die "debootstrap failed"
fi
log "$root from $mirror: $(chroot "$root" dpkg-query -W | wc -l) packages"

step "mounts"
# The root onto itself: tests (the Sendmail fixture) unshare a mount namespace
# and bind-mount files in it, which needs the root to be a mount point.
mount --bind "$root" "$root"
mount --make-private "$root"
mount -t proc proc "$root/proc"
# Slaves: an unmount in the root never propagates back to this machine's /dev.
mount --rbind /dev "$root/dev"
mount --make-rslave "$root/dev"
mount --rbind /sys "$root/sys"
mount --make-rslave "$root/sys"
log "$(mounts_below "$root" | wc -l) mounts: $root, /proc, /dev, /sys and what is below them"

# --- 3. what reaching the package registries takes --------------------------------

step "registry access"
copied=()
copy_in() {
    local file
    for file in "$@"; do
        [ -e "$file" ] || continue
        mkdir -p "$root$(dirname "$file")"
        cp -L "$file" "$root$file"
        copied+=("$file")
    done
}
copy_in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources
# The keyrings those sources name, where the root lacks them.
for keyring in $(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
    /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | grep -oiE '(signed-by:[[:space:]]*|signed-by=)/[^] ,]+' | sed 's/^[^/]*//' | sort -u); do
    [ -e "$root$keyring" ] || copy_in "$keyring"
done
# apt's Acquire settings (proxy, dates of the mirror's Release files).
for conf in /etc/apt/apt.conf.d/*; do
    grep -qE '^[[:space:]]*Acquire' "$conf" 2>/dev/null && copy_in "$conf"
done
# pip's system configuration: in a venv pip verifies PyPI with its own CA
# bundle unless this says otherwise.  Per-user files and /etc/xdg/pip hold
# this machine's local wheel caches, which a new machine does not have.
copy_in /etc/pip.conf
# The CA bundle, and the local certificates it was built from, so that
# update-ca-certificates (when ca-certificates gets installed) keeps them.
copy_in /etc/ssl/certs/ca-certificates.crt /usr/local/share/ca-certificates/*
copy_in /etc/resolv.conf
printf 'fresh:   %s\n' "${copied[@]}"

# --- 4. the checkout --------------------------------------------------------------

step "clone the checkout"
clone="$root/root/ldapdkim"
git clone -q --no-hardlinks "$repo_root" "$clone"
git -C "$clone" checkout -q --detach "$head"
readme="$clone/README.md"
command_1=$(quickstart_block 1 "$readme")
command_2=$(quickstart_block 2 "$readme")
sign_line=$(awk '/^## / { s = ($0 == "## Quick start"); next } s' "$readme" \
    | grep -oE '`\.venv/bin/ldapdkim sign [^`]+`' | head -n 1 | tr -d '`')
grep -q 'ldapdkim run ' <<<"$command_1" \
    || die "README.md: the first sh block of '## Quick start' does not start the milter (ldapdkim run)"
grep -q 'pytest' <<<"$command_2" \
    || die "README.md: the second sh block of '## Quick start' does not run pytest"
[ -n "$sign_line" ] || die "README.md: '## Quick start' has no \`.venv/bin/ldapdkim sign ...\` line"
printf '%s\n' "$command_1" >"$root/root/quickstart-1.sh"
printf '%s\n' "$command_2" >"$root/root/quickstart-2.sh"
log "/root/ldapdkim at $(git -C "$clone" log -1 --format=%h); README's commands:"
sed 's/^/fresh:   1 | /' <<<"$command_1"
sed 's/^/fresh:   2 | /' <<<"$command_2"
printf 'fresh:   sign | %s\n' "$sign_line"

# --- 5. command 1: install ldapdkim and start the milter --------------------------

step "Quick start command 1 (listening)"
if port_taken "$milter_port"; then
    die "something on this machine already listens on port $milter_port, which command 1 needs"
fi
in_root /bin/bash -c 'cd /root/ldapdkim && exec /bin/bash /root/quickstart-1.sh' \
    >"$work/command-1.log" 2>&1 </dev/null &
command_1_pid=$!
deadline=$(($(date +%s) + listen_deadline))
until root_listens_on "$milter_port"; do
    if ! kill -0 "$command_1_pid" 2>/dev/null; then
        tail -n 40 "$work/command-1.log" >&2
        die "command 1 ended before its milter listened on 127.0.0.1:$milter_port"
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
        tail -n 40 "$work/command-1.log" >&2
        die "command 1's milter did not listen on 127.0.0.1:$milter_port within $listen_deadline s"
    fi
    sleep 1
done
log "the milter listens on 127.0.0.1:$milter_port"

step "Quick start command 1 (ldapdkim sign)"
if ! signed=$(in_root /bin/bash -c "cd /root/ldapdkim && $sign_line" 2>"$work/sign.err"); then
    cat "$work/sign.err" >&2
    die "'$sign_line' failed"
fi
signatures=$(grep -c '^DKIM-Signature:' <<<"$signed" || true)
[ "$signatures" -gt 0 ] || die "'$sign_line' printed no DKIM-Signature field"
log "'$sign_line': $signatures DKIM-Signature fields"
grep '^DKIM-Signature:' <<<"$signed" | cut -c1-90 | sed 's/^/fresh:   /'

step "Quick start command 1 (stop)"
stopped=$(end_root_processes)
wait "$command_1_pid" 2>/dev/null || true
log "stopped the milter ($stopped processes); command 1 printed $(wc -l <"$work/command-1.log") lines"

# --- 6. command 2: setup.sh and the whole test suite ------------------------------

step "Quick start command 2 (tests/setup.sh and pytest)"
# The whole output goes to the log, shown if it goes wrong (show_progress).
set +e
timeout --kill-after=30 "$suite_deadline" \
    chroot "$root" /usr/bin/env -i PATH="$clean_path" HOME=/root \
    /bin/bash -c 'cd /root/ldapdkim && exec /bin/bash /root/quickstart-2.sh' </dev/null 2>&1 \
    | tee "$work/command-2.log" \
    | show_progress
command_2_status=${PIPESTATUS[0]}
set -e
pytest_summary=$(grep -E '^=+ .* in [0-9.]+s( \([0-9:]+\))? =+$' "$work/command-2.log" | tail -n 1 || true)
if [ -z "$pytest_summary" ]; then
    tail -n 60 "$work/command-2.log" >&2
    die "command 2 ended (status $command_2_status) without a pytest summary line"
fi
if grep -qE '[0-9]+ (failed|errors?)\b' <<<"$pytest_summary" || [ "$command_2_status" -ne 0 ]; then
    die "command 2: $pytest_summary (status $command_2_status)"
fi
unexpected=()
while IFS= read -r skipped; do
    allowed=no
    for pattern in "${ALLOWED_SKIPS[@]}"; do
        [[ "$skipped" =~ $pattern ]] && allowed=yes
    done
    [ "$allowed" = yes ] || unexpected+=("$skipped")
done < <(grep -E '^SKIPPED \[' "$work/command-2.log" || true)
if [ "${#unexpected[@]}" -gt 0 ]; then
    printf 'fresh: skipped: %s\n' "${unexpected[@]}" >&2
    die "command 2 skipped tests that ALLOWED_SKIPS in tests/fresh-machine.sh does not justify"
fi
log "command 2: $pytest_summary"
end_step
