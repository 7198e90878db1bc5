#!/bin/sh
# make-ldif.sh -- generate the cn=config and 389-DS forms of ldapdkim.schema.
#
# Usage: sh schema/make-ldif.sh [OUTDIR]
#
# Writes OUTDIR/ldapdkim.ldif and OUTDIR/389ds/99ldapdkim.ldif; OUTDIR
# defaults to the directory this script is in.  Needs slaptest (Debian
# package slapd) and core.schema in $SCHEMA_DIR (default /etc/ldap/schema).
#
# slaptest parses ldapdkim.schema the way slapd does and writes the cn=config
# entry.  This script only removes what slaptest adds (the CRC comment, the
# {n} index in the RDN, operational attributes) and puts a header on top.
# The 389-DS form is the same definitions, unfolded, with the OID macros
# spelled out as numbers and X-ORIGIN 'ldapdkim' added.
# tests/integration/test_schema.py runs this script and compares its output
# with the files in the repository, so edit ldapdkim.schema, never the output.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here}
schema_dir=${SCHEMA_DIR:-/etc/ldap/schema}
slaptest=${SLAPTEST:-$(command -v slaptest || echo /usr/sbin/slaptest)}
arc=2.25.171264593737752151711171165823736596533

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' INT TERM

printf 'include "%s/core.schema"\ninclude "%s/ldapdkim.schema"\n' \
	"$schema_dir" "$here" >"$tmp/slapd.conf"
mkdir "$tmp/slapd.d"
if ! "$slaptest" -f "$tmp/slapd.conf" -F "$tmp/slapd.d" >"$tmp/slaptest.log" 2>&1; then
	cat "$tmp/slaptest.log" >&2
	echo "make-ldif.sh: slaptest rejected $here/ldapdkim.schema" >&2
	exit 1
fi

# Keep slaptest's line folding; drop comments and operational attributes
# (with their continuation lines) and give the entry its absolute DN.
awk '
/^#/ { next }
/^ / { if (!skip) print; next }
{ skip = ($0 ~ /^(structuralObjectClass|entryUUID|creatorsName|createTimestamp|entryCSN|modifiersName|modifyTimestamp):/) }
skip { next }
/^dn: cn=\{[0-9]+\}ldapdkim$/ { print "dn: cn=ldapdkim,cn=schema,cn=config"; next }
/^cn: \{[0-9]+\}ldapdkim$/ { print "cn: ldapdkim"; next }
/^$/ { next }
{ print }
' "$tmp/slapd.d/cn=config/cn=schema/cn={1}ldapdkim.ldif" >"$tmp/body.ldif"

{
	cat <<'EOF'
# ldapdkim.ldif -- the ldapdkim schema in OpenLDAP cn=config form.
#
# Generated from ldapdkim.schema by make-ldif.sh; do not edit by hand.
# Defines the attribute types dkimSign* (OIDs
# 2.25.171264593737752151711171165823736596533.1.1-15) and the object classes
# dkimSignDomainPolicy (AUXILIARY, .2.1) and dkimSignKey (STRUCTURAL, .2.2)
# for the DKIM signing milter ldapdkim.  Requires the core schema.
#
# Online, on a server using cn=config (as root on that server):
#   ldapadd -Y EXTERNAL -H ldapi:/// -f ldapdkim.ldif
# Offline, with slapd stopped:
#   slapadd -n0 -F /etc/ldap/slapd.d -l ldapdkim.ldif
# or from a config LDIF loaded with slapadd -n0, after core.ldif:
#   include: file:///etc/ldap/schema/ldapdkim.ldif
# Load it before any olcAccess or olcDbIndex line that names a dkimSign
# attribute.  For slapd.conf, include ldapdkim.schema instead.
#
# The names start with "dkimSign" because OpenDKIM's contrib schema already
# has DKIMDomain, DKIMSelector, DKIMKey, DKIMIdentity and the class DKIM, and
# LDAP names are case-insensitive; with the prefix both can be loaded.
EOF
	cat "$tmp/body.ldif"
} >"$tmp/ldapdkim.ldif"

{
	cat <<'EOF'
# 99ldapdkim.ldif -- the ldapdkim schema for 389 Directory Server.
#
# Generated from ldapdkim.schema by make-ldif.sh; do not edit by hand.
# Same definitions as ldapdkim.ldif (OpenLDAP), with numeric OIDs and
# X-ORIGIN 'ldapdkim'.  The test suite loads it into 389-DS 2.3.
#
# Offline: copy to /etc/dirsrv/slapd-INSTANCE/schema/99ldapdkim.ldif
#   (owner dirsrv, mode 0440) and restart:  dsctl INSTANCE restart
# Online:  copy it there as above, then:   dsconf INSTANCE schema reload
# On a replicated topology, load it on every supplier and consumer.
#
# Protect dkimSignPrivateKey with ACIs so that only the milter's service DN
# can read, search or compare it: conf/389ds-aci.ldif has them (adapt the
# DNs), and docs/howto/389ds.md the rest of the set-up.
#
# The names start with "dkimSign" because OpenDKIM's contrib schema already
# has DKIMDomain, DKIMSelector, DKIMKey, DKIMIdentity and the class DKIM, and
# LDAP names are case-insensitive; with the prefix both can be loaded.
dn: cn=schema
EOF
	# Unfold continuation lines, keep the definitions, expand the macros.
	awk '
	NR > 1 && /^ / { line = line substr($0, 2); next }
	NR > 1 { print line }
	{ line = $0 }
	END { print line }
	' "$tmp/body.ldif" |
		sed -n \
			-e 's/^olcAttributeTypes: {[0-9]*}/attributeTypes: /p' \
			-e 's/^olcObjectClasses: {[0-9]*}/objectClasses: /p' |
		sed \
			-e "s/^\\([a-zA-Z]*: \\)( ldapdkimAttr:\\([0-9]*\\) /\\1( $arc.1.\\2 /" \
			-e "s/^\\([a-zA-Z]*: \\)( ldapdkimClass:\\([0-9]*\\) /\\1( $arc.2.\\2 /" \
			-e "s/ )\$/ X-ORIGIN 'ldapdkim' )/"
} >"$tmp/99ldapdkim.ldif"

if grep -Eq 'ldapdkim(Arc|Attr|Class)' "$tmp/99ldapdkim.ldif"; then
	echo "make-ldif.sh: an OID macro was left in the 389-DS form" >&2
	exit 1
fi

mkdir -p "$out/389ds"
cp "$tmp/ldapdkim.ldif" "$out/ldapdkim.ldif"
cp "$tmp/99ldapdkim.ldif" "$out/389ds/99ldapdkim.ldif"
