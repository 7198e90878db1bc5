#!/usr/bin/perl
# mail_dkim_arc.pl -- Perl Mail::DKIM's ARC verifier and sealer, for the ARC
# interoperability tests (tests/harness/arcpeers.py).
#
#   mail_dkim_arc.pl verify PORT < message
#       prints: RESULT DETAIL (the chain's cv as Mail::DKIM::ARC::Verifier says it)
#   mail_dkim_arc.pl seal PORT DOMAIN SELECTOR KEYFILE SRVID < message
#       verifies the chain, then prints the new ARC set (ARC-Seal first), CRLF,
#       sealed with the verifier's result as cv
#
# Keys come from the test DNS server on 127.0.0.1:PORT only.
use strict;
use warnings;

use Mail::DKIM 0.40;
use Mail::DKIM::DNS;
use Mail::DKIM::ARC::Verifier;
use Mail::DKIM::ARC::Signer;
use Net::DNS::Resolver;

my ( $mode, $port, @rest ) = @ARGV;
defined $port && $port =~ /^\d+$/
  or die "usage: $0 verify|seal PORT [DOMAIN SELECTOR KEYFILE SRVID] < message\n";

my $resolver = Net::DNS::Resolver->new(
    config_file => '/dev/null',
    nameservers => ['127.0.0.1'],
    port        => $port,
    recurse     => 1,
    defnames    => 0,
    dnsrch      => 0,
    retry       => 1,
    retrans     => 2,
    udp_timeout => 2,
    tcp_timeout => 2,
);
Mail::DKIM::DNS::resolver($resolver);

binmode STDIN;
my $message = do { local $/; <STDIN> };
$message =~ s/\r?\n/\r\n/g;

my $verifier = Mail::DKIM::ARC::Verifier->new();
$verifier->PRINT($message);
$verifier->CLOSE;
my $result = $verifier->result;
if ( $mode eq 'verify' ) {
    print $result, ' ', ( $verifier->result_detail // '' ), "\n";
    exit 0;
}
$mode eq 'seal' or die "unknown mode $mode\n";
my ( $domain, $selector, $keyfile, $srvid ) = @rest;
my $chain = $result =~ /^(pass|fail|none)$/ ? $result : 'fail';
my $signer = Mail::DKIM::ARC::Signer->new(
    Algorithm => 'rsa-sha256',
    Chain     => $chain,
    SrvId     => $srvid,
    Domain    => $domain,
    Selector  => $selector,
    KeyFile   => $keyfile,
);
# The AAR records what this hop found: the chain's result.
my $ar = "Authentication-Results: $srvid; arc=$chain\r\n";
$signer->PRINT( $ar . $message );
$signer->CLOSE;
$signer->result eq 'sealed'
  or die "Mail::DKIM did not seal: " . $signer->result . ' ' . ( $signer->result_detail // '' ) . "\n";
print join( "\r\n", $signer->as_strings ), "\r\n";
