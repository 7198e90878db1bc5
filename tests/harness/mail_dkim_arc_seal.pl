#!/usr/bin/perl
# Seal a message's ARC chain (RFC 8617) with Perl Mail::DKIM::ARC::Signer, an
# implementation independent of ldapdkim and dkimpy.
#
# Usage: mail_dkim_arc_seal.pl DOMAIN SELECTOR SRVID KEYFILE CHAIN [ALGORITHM] < message
#
# Prints the three fields of the new set (ARC-Seal, ARC-Message-Signature,
# ARC-Authentication-Results, in that order) with CRLF line ends.  CHAIN is
# the cv= to write (none, pass, fail), or "ar" to read it from the
# Authentication-Results of SRVID, whose results are copied into the
# ARC-Authentication-Results.  Mail::DKIM seals with rsa-sha256 only.
# Exits 1 with the reason on stderr when it does not seal.
# First line on stderr: "version V" (the Mail::DKIM version in use).
use strict;
use warnings;

use Mail::DKIM 0.40;
use Mail::DKIM::ARC::Signer;
use Mail::DKIM::TextWrap;

print STDERR "version $Mail::DKIM::VERSION\n";
my ( $domain, $selector, $srvid, $keyfile, $chain, $algorithm ) = @ARGV;
defined $chain
  or die "usage: $0 DOMAIN SELECTOR SRVID KEYFILE CHAIN [ALGORITHM] < message\n";
binmode STDIN;
binmode STDOUT;
my $message = do { local $/; <STDIN> };
$message =~ s/\r?\n/\r\n/g;

my $signer = Mail::DKIM::ARC::Signer->new(
    Algorithm => $algorithm // 'rsa-sha256',
    Chain     => $chain,
    Domain    => $domain,
    SrvId     => $srvid,
    Selector  => $selector,
    KeyFile   => $keyfile,
);
$signer->PRINT($message);
$signer->CLOSE;
my $result = $signer->result // 'none';
if ( $result ne 'sealed' ) {
    print STDERR "not sealed: $result (", $signer->result_detail // '', ")\n";
    exit 1;
}
my $fields = $signer->as_string;
$fields =~ s/\r?\n/\r\n/g;
print $fields;
exit 0;
