#!/usr/bin/perl
# Verify the DKIM signatures of one message with Perl Mail::DKIM, an
# implementation independent of dkimpy, fetching keys from a test DNS server.
#
# Usage: mail_dkim_verify.pl PORT [TIMEOUT_SECONDS] < message
#        mail_dkim_verify.pl PORT TIMEOUT_SECONDS --batch < framed messages
#        mail_dkim_verify.pl PORT TIMEOUT_SECONDS --arc < message
#
# With --batch, standard input holds any number of messages, each preceded
# by a line with its length in octets; each message's lines are followed by
# a line "end" (one process verifies thousands: the differential tests).
#
# The message may have LF or CRLF line ends; Mail::DKIM expects CRLF, so bare
# LFs are converted. Keys are looked up at 127.0.0.1:PORT only. Prints one
# line per DKIM-Signature:
#   RESULT domain=D selector=S algorithm=A detail=DETAIL
# where RESULT is $sig->result in lowercase (pass, fail, invalid, temperror,
# ...) and DETAIL is $sig->result_detail (rest of the line). Prints "none"
# when the message has no DKIM signature. DomainKeys signatures
# (DomainKey-Signature, RFC 4870) are not DKIM and are not reported. A
# DKIM-Signature too broken for Mail::DKIM to parse is reported as
#   invalid domain=- selector=- algorithm=- detail=invalid (REASON)
# With --arc, the message's ARC chain (RFC 8617) is verified instead, with
# Mail::DKIM::ARC::Verifier, and one line printed:
#   RESULT detail=DETAIL
# where RESULT is $arc->result (pass, fail, none) and DETAIL its result_detail.
# First line on stderr: "version V" (the Mail::DKIM version in use).
use strict;
use warnings;

use Mail::DKIM 0.40;
use Mail::DKIM::Verifier;
use Mail::DKIM::ARC::Verifier;
use FindBin;
use lib $FindBin::RealBin;
use LoopbackDns;

my ( $port, $timeout ) = @ARGV;
defined $port && $port =~ /^\d+$/
  or die "usage: $0 PORT [TIMEOUT_SECONDS] < message\n";
$timeout = 2 unless defined $timeout && $timeout =~ /^\d+$/;

print STDERR "version $Mail::DKIM::VERSION\n";

LoopbackDns::use_only( $port, $timeout );    # only our DNS server

binmode STDIN;
$| = 1;
if ( ( $ARGV[2] // '' ) eq '--batch' ) {
    while ( defined( my $length = <STDIN> ) ) {
        chomp $length;
        read( STDIN, my $message, $length ) == $length or die "short message\n";
        verify_message($message);
        print "end\n";
    }
}
elsif ( ( $ARGV[2] // '' ) eq '--arc' ) {
    verify_chain( do { local $/; <STDIN> } );
}
else {
    verify_message( do { local $/; <STDIN> } );
}
exit 0;

sub verify_chain {
    my ($message) = @_;
    $message =~ s/\r?\n/\r\n/g;
    my $arc = Mail::DKIM::ARC::Verifier->new();
    $arc->PRINT($message);
    $arc->CLOSE;
    my $detail = $arc->result_detail // '';
    $detail =~ s/[\r\n]+/ /g;
    printf "%s detail=%s\n", $arc->result // 'none', $detail;
    return;
}

sub verify_message {
    my ($message) = @_;
    $message =~ s/\r?\n/\r\n/g;

    my $dkim = Mail::DKIM::Verifier->new();
    $dkim->PRINT($message);
    $dkim->CLOSE;

    # Signatures Mail::DKIM could not parse at all are left out of ->signatures;
    # report them too, so that a mangled header is not mistaken for "none".
    my ($header) = split /\r\n\r\n/, $message, 2;
    my $dkim_fields = () = ( $header // '' ) =~ /^DKIM-Signature[ \t]*:/mgi;

    my $count = 0;
    foreach my $sig ( $dkim->signatures ) {
        next if $sig->isa('Mail::DKIM::DkSignature');
        $count++;
        my $result = lc( $sig->result // 'none' );
        my $detail = $sig->result_detail // $result;
        $detail =~ s/[\r\n]+/ /g;
        printf "%s domain=%s selector=%s algorithm=%s detail=%s\n", $result,
          _field( $sig->domain ), _field( $sig->selector ),
          _field( $sig->algorithm ), $detail;
    }
    for ( $count + 1 .. $dkim_fields ) {
        my $reason = $dkim->{signature_reject_reason} // 'unparseable signature';
        $reason =~ s/[\r\n]+/ /g;
        print "invalid domain=- selector=- algorithm=- detail=invalid ($reason)\n";
        $count++;
    }
    print "none\n" unless $count;
    return;
}

# A tag value as one token: "-" when missing, whitespace removed.
sub _field {
    my ($value) = @_;
    return '-' unless defined $value && length $value;
    $value =~ s/\s+//g;
    return $value;
}
