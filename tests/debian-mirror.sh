# Sourced by tests/setup.sh and tests/fresh-machine.sh.

# The mirror this machine already uses, from its deb822 sources if it has them.
debian_mirror() {
    local sources=/etc/apt/sources.list.d/debian.sources uri=""
    if [ -r "$sources" ]; then
        uri=$(awk '/^URIs:/ && $2 !~ /security/ { print $2; exit }' "$sources")
    fi
    if [ -z "$uri" ] && [ -r /etc/apt/sources.list ]; then
        uri=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' \
            /etc/apt/sources.list)
    fi
    printf '%s\n' "${uri:-http://deb.debian.org/debian}"
}
