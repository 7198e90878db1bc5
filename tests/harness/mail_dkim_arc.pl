#!/usr/bin/perl
# ARC with Perl Mail::DKIM, an implementation independent of dkimpy and of
# ldapdkim: one long-running process serves many requests (the ARC
# differential sends thousands), keys fetched from a test DNS server.
#
# Usage: mail_dkim_arc.pl PORT [TIMEOUT_SECONDS] < requests
#
# Each request is one line, then LENGTH octets of message:
#   verify LENGTH
#   seal LENGTH DOMAIN SELECTOR SRVID KEYFILE TIMESTAMP
# Answers, each ended by a line "end":
#   verify: "RESULT DETAIL", RESULT being Mail::DKIM::ARC::Verifier's result
#           (pass, fail, invalid, none, temperror) and DETAIL its result_detail
#           on one line;
#   seal:   the three new fields (ARC-Seal, ARC-Message-Signature,
#           ARC-Authentication-Results), each as a line with its length in
#           octets then the field itself ("Name: value", folds kept) and a
#           newline; or "error REASON" when Mail::DKIM did not seal.
# The sealer reads cv= from the arc= result of the Authentication-Results
# field of SRVID (Chain => 'ar'), as Mail::DKIM does in a real MTA.
# First line of output: "version V" (the Mail::DKIM version in use).
use strict;
use warnings;

use Mail::DKIM 0.50;
use Mail::DKIM::ARC::Verifier;
use Mail::DKIM::ARC::Signer;
use Mail::DKIM::TextWrap;    # folded fields, as MTAs using it seal
use FindBin;
use lib $FindBin::RealBin;
use LoopbackDns;

my ( $port, $timeout ) = @ARGV;
defined $port && $port =~ /^\d+$/
  or die "usage: $0 PORT [TIMEOUT_SECONDS] < requests\n";
$timeout = 2 unless defined $timeout && $timeout =~ /^\d+$/;

binmode STDIN;
binmode STDOUT;
$| = 1;
print "version $Mail::DKIM::VERSION\n";

LoopbackDns::use_only( $port, $timeout );    # only our DNS server

while ( defined( my $line = <STDIN> ) ) {
    chomp $line;
    my ( $verb, $length, @args ) = split / /, $line;
    read( STDIN, my $message, $length ) == $length or die "short message\n";
    $message =~ s/\r?\n/\r\n/g;
    if ( $verb eq 'verify' ) {
        verify($message);
    }
    elsif ( $verb eq 'seal' ) {
        seal( $message, @args );
    }
    else {
        die "unknown request '$verb'\n";
    }
    print "end\n";
}
exit 0;

sub verify {
    my ($message) = @_;
    my $arc = Mail::DKIM::ARC::Verifier->new();
    my ( $result, $detail );
    eval {
        $arc->PRINT($message);
        $arc->CLOSE;
        $result = $arc->result // 'none';
        $detail = $arc->result_detail // $result;
        1;
    } || do {
        ( $result, $detail ) = ( 'died', $@ );
    };
    $detail =~ s/[\r\n]+/ /g;
    print "$result $detail\n";
    return;
}

sub seal {
    my ( $message, $domain, $selector, $srvid, $keyfile, $timestamp ) = @_;
    my $signer = Mail::DKIM::ARC::Signer->new(
        Algorithm => 'rsa-sha256',
        Chain     => 'ar',
        Domain    => $domain,
        SrvId     => $srvid,
        Selector  => $selector,
        KeyFile   => $keyfile,
        Timestamp => $timestamp,
    );
    $signer->PRINT($message);
    $signer->CLOSE;
    if ( $signer->result ne 'sealed' ) {
        my $detail = $signer->result_detail // $signer->result;
        $detail =~ s/[\r\n]+/ /g;
        print "error $detail\n";
        return;
    }
    foreach my $field ( $signer->as_strings ) {
        print length($field), "\n", $field, "\n";
    }
    return;
}
