package LoopbackDns;

# Mail::DKIM asks only the test's DNS server on 127.0.0.1:PORT: no
# /etc/resolv.conf, no search list, no retries beyond the timeout, so a
# swallowed query becomes a temperror in about TIMEOUT seconds.  Shared by
# mail_dkim_verify.pl and mail_dkim_arc.pl.
use strict;
use warnings;

use Mail::DKIM::DNS;
use Net::DNS::Resolver;

sub use_only {
    my ( $port, $timeout ) = @_;
    my $resolver = Net::DNS::Resolver->new(
        config_file => '/dev/null',
        nameservers => ['127.0.0.1'],
        port        => $port,
        recurse     => 1,
        defnames    => 0,
        dnsrch      => 0,
        retry       => 1,
        retrans     => $timeout,
        udp_timeout => $timeout,
        tcp_timeout => $timeout,
    );
    Mail::DKIM::DNS::resolver($resolver);
    $Mail::DKIM::DNS::TIMEOUT = $timeout + 1;
}

1;
