#!/usr/bin/env bash
# make_pcaps.sh - regenerate dnsguard's own sample captures.
#
# Runs REAL tunnel tools (iodine, dns2tcp) and a real resolver (dnsmasq) in
# three network namespaces that this script creates, and records the client's
# side of the wire with tcpdump:
#
#   dg-client  c0 10.53.0.10/24 (+10.53.0.20 for the benign "second host")
#      |  veth
#   dg-resolver r0 10.53.0.1/24   dnsmasq: authoritative for a few *.example
#              r1 10.53.1.1/24    names, forwards tunnel.example to 10.53.1.53,
#      |  veth                    never forwards anywhere else (--no-resolv)
#   dg-server  s0 10.53.1.53/24   iodined / dns2tcpd listen here on port 53
#
# All traffic stays on loopback or inside these namespaces; nothing is ever
# sent anywhere else. Every process and transfer is bounded with `timeout`
# and packet counts; namespaces and processes are removed on exit (trap),
# also on failure. The script installs nothing; it checks for what it needs.
#
# Usage:  sudo bash pcaps/make_pcaps.sh         (re-runnable, idempotent)
# Debug:  DG_KEEP_WORK=1 keeps the temporary work folder (logs, raw captures).
# Output: pcaps/*.pcap (written only when every capture was made and checked)
#         and the generated table in pcaps/README.md.

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT_DIR=${DG_PCAP_OUT:-$HERE}

NS_C=dg-client
NS_R=dg-resolver
NS_S=dg-server
C_IP=10.53.0.10      # tunnel client
C2_IP=10.53.0.20     # second, benign host in the mixed capture
R_IP=10.53.0.1       # resolver, client side
R_IP2=10.53.1.1      # resolver, server side
S_IP=10.53.1.53      # tunnel server (iodined / dns2tcpd)
PASS=dnsguard-sample-pw     # iodine password
D2T_KEY=dnsguard-sample-key # dns2tcp key

T0=$(date +%s)
WORK=""
HAVE_LOCK=""
BG_PIDS=()

log()  { printf '[make_pcaps %3ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
die()  { printf '[make_pcaps] ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- checks ---
check_tools() {
    local missing=() cmd pkg
    # command:debian-package
    for pair in ip:iproute2 ss:iproute2 iodine:iodine iodined:iodine \
                dns2tcpc:dns2tcp dns2tcpd:dns2tcp tcpdump:tcpdump \
                tshark:tshark capinfos:wireshark-common dnsmasq:dnsmasq-base \
                dig:bind9-dnsutils socat:socat nc:netcat-openbsd \
                ping:iputils-ping ethtool:ethtool timeout:coreutils \
                flock:util-linux; do
        cmd=${pair%%:*}; pkg=${pair#*:}
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd (Debian package: $pkg)")
    done
    if ((${#missing[@]})); then
        printf '[make_pcaps] missing tools:\n' >&2
        printf '    %s\n' "${missing[@]}" >&2
        printf '[make_pcaps] install them, e.g.: apt-get install -y iodine dns2tcp tcpdump tshark dnsmasq-base bind9-dnsutils socat netcat-openbsd iputils-ping ethtool\n' >&2
        exit 2
    fi
    [[ $(id -u) -eq 0 ]] || die "must run as root (network namespaces, tun devices): sudo bash $0"
    if [[ ! -c /dev/net/tun ]]; then
        log "creating /dev/net/tun (iodine needs it)"
        mkdir -p /dev/net
        mknod /dev/net/tun c 10 200
        chmod 0666 /dev/net/tun
    fi
    # nc must be the OpenBSD flavour (-N, -w semantics used below)
    nc -h 2>&1 | grep -q -- '-N' || die "nc is not netcat-openbsd (need the -N option)"
}

# --------------------------------------------------------------- cleanup ---
kill_ns_procs() {
    local ns=$1 pids
    ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$ns" || return 0
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    [[ -n $pids ]] || return 0
    kill -TERM $pids 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        [[ -z $pids ]] && return 0
        sleep 0.2
    done
    kill -KILL $pids 2>/dev/null || true
}

teardown_net() {
    local ns
    for ns in "$NS_C" "$NS_R" "$NS_S"; do
        kill_ns_procs "$ns"
        if ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$ns"; then
            ip netns del "$ns" 2>/dev/null || true
        fi
    done
}

cleanup() {
    local rc=$?
    set +e
    local p
    for p in "${BG_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    # only the run holding the lock owns the dg-* namespaces
    [[ -n $HAVE_LOCK ]] && teardown_net
    for p in "${BG_PIDS[@]}"; do wait "$p" 2>/dev/null; done
    if [[ -n $WORK && -d $WORK ]]; then
        if [[ -n ${DG_KEEP_WORK:-} ]]; then echo "[make_pcaps] work files kept in $WORK" >&2
        else rm -rf "$WORK"; fi
    fi
    if ((rc != 0)); then
        echo "[make_pcaps] failed (exit $rc); namespaces and processes cleaned up, existing pcaps left unchanged" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# helpers to run things inside a namespace --------------------------------
inC() { ip netns exec "$NS_C" "$@"; }
inR() { ip netns exec "$NS_R" "$@"; }
inS() { ip netns exec "$NS_S" "$@"; }

# bg NS SECONDS LOGFILE cmd...  -> starts a bounded background process, sets BG
bg() {
    local ns=$1 secs=$2 logf=$3; shift 3
    ip netns exec "$ns" timeout -k 3 "$secs" "$@" >"$logf" 2>&1 &
    BG=$!
    BG_PIDS+=("$BG")
}

stop() {   # stop PID: TERM, wait (bounded)
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 25); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

wait_for() {  # wait_for SECONDS DESCRIPTION cmd...
    local secs=$1 what=$2; shift 2
    local end=$(( $(date +%s) + secs ))
    until "$@" >/dev/null 2>&1; do
        (( $(date +%s) < end )) || return 1
        sleep 0.2
    done
}

# --------------------------------------------------------------- network ---
setup_net() {
    teardown_net   # leftovers from an interrupted earlier run
    ip netns add "$NS_C"
    ip netns add "$NS_R"
    ip netns add "$NS_S"
    # fixed MAC addresses so regenerated captures look alike
    ip link add c0 netns "$NS_C" address 02:53:00:00:00:0a type veth \
        peer name r0 netns "$NS_R" address 02:53:00:00:00:01
    ip link add r1 netns "$NS_R" address 02:53:00:00:01:01 type veth \
        peer name s0 netns "$NS_S" address 02:53:00:00:01:35
    local ns
    for ns in "$NS_C" "$NS_R" "$NS_S"; do
        ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
        ip netns exec "$ns" sysctl -qw net.ipv6.conf.default.disable_ipv6=1
        ip netns exec "$ns" ip link set lo up
    done
    inC ip addr add "$C_IP/24" dev c0
    inC ip addr add "$C2_IP/24" dev c0
    inC ip link set c0 up
    inC ip route add default via "$R_IP"
    inR ip addr add "$R_IP/24" dev r0
    inR ip addr add "$R_IP2/24" dev r1
    inR ip link set r0 up
    inR ip link set r1 up
    inR sysctl -qw net.ipv4.ip_forward=1
    inS ip addr add "$S_IP/24" dev s0
    inS ip link set s0 up
    inS ip route add default via "$R_IP2"
    # no checksum/segmentation offload: the captured packets then carry real
    # checksums and on-the-wire segment sizes
    inC ethtool -K c0 tx off rx off tso off gso off gro off >/dev/null 2>&1 || true
    inR ethtool -K r0 tx off rx off tso off gso off gro off >/dev/null 2>&1 || true
    inR ethtool -K r1 tx off rx off tso off gso off gro off >/dev/null 2>&1 || true
    inS ethtool -K s0 tx off rx off tso off gso off gro off >/dev/null 2>&1 || true
    inC ping -c 1 -W 2 "$S_IP" >/dev/null || die "namespace routing does not work"
}

# -------------------------------------------------------------- resolver ---
start_resolver() {
    cat >"$WORK/dnsmasq.conf" <<EOF
# dnsguard sample resolver: answers *.example from local data, forwards the
# tunnel zones to the tunnel server namespace, never forwards anywhere else.
no-resolv
no-hosts
no-poll
bind-interfaces
listen-address=$R_IP
port=53
user=root
pid-file=$WORK/dnsmasq.pid
log-queries
log-facility=$WORK/dnsmasq.queries.log
cache-size=150
local-ttl=300
domain-needed
local=/example/
local=/exmaple/
local=/in-addr.arpa/
local=/ip6.arpa/
server=/tunnel.example/$S_IP
host-record=www.shop.example,shop.example,10.53.10.10,fd53:0:0:10::10
host-record=api.shop.example,10.53.10.11,fd53:0:0:10::11
host-record=mx1.shop.example,10.53.10.25
address=/cdn.shop.example/10.53.10.30
host-record=mail.corp.example,10.53.20.25,fd53:0:0:20::25
host-record=intranet.corp.example,10.53.20.10
host-record=wiki.corp.example,10.53.20.11
host-record=git.corp.example,10.53.20.12,fd53:0:0:20::12
host-record=vpn.corp.example,10.53.20.1
host-record=dc1.corp.example,10.53.20.2
host-record=ntp.corp.example,10.53.20.3
host-record=printer1.corp.example,10.53.20.50
host-record=www.portal.example,10.53.30.10,fd53:0:0:30::10
host-record=login.portal.example,10.53.30.11
host-record=news.portal.example,10.53.30.12
host-record=update.vendor.example,10.53.40.10
cname=static.shop.example,cdn.shop.example
cname=webmail.corp.example,mail.corp.example
mx-host=shop.example,mx1.shop.example,10
mx-host=corp.example,mail.corp.example,10
mx-host=portal.example,mail.corp.example,20
txt-record=corp.example,"v=spf1 mx -all"
txt-record=_dmarc.corp.example,"v=DMARC1; p=quarantine; rua=mailto:dmarc@corp.example"
txt-record=shop.example,"v=spf1 ip4:10.53.10.25 -all","site-verification=3f9a1c0d2b"
txt-record=sel1._domainkey.corp.example,"v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC7"
srv-host=_ldap._tcp.corp.example,dc1.corp.example,389,0,100
srv-host=_kerberos._udp.corp.example,dc1.corp.example,88,0,100
srv-host=_imaps._tcp.corp.example,mail.corp.example,993,0,100
EOF
    bg "$NS_R" 900 "$WORK/dnsmasq.out" dnsmasq --keep-in-foreground --conf-file="$WORK/dnsmasq.conf"
    RESOLVER_PID=$BG
    wait_for 10 "dnsmasq" inC dig +tries=1 +time=1 @"$R_IP" www.shop.example A \
        || die "dnsmasq did not come up: $(cat "$WORK/dnsmasq.out")"
}

# --------------------------------------------------------------- capture ---
# cap_start NAME MAXPKTS MAXSECS : tcpdump on the client's veth (Ethernet)
cap_start() {
    local name=$1 maxp=$2 secs=$3
    CAP_FILE="$WORK/$name"
    bg "$NS_C" "$secs" "$WORK/$name.tcpdump.log" \
        tcpdump -i c0 -n -U -s 0 -Z root -c "$maxp" -w "$CAP_FILE" ip
    CAP_PID=$BG
    wait_for 10 "tcpdump" grep -q 'listening on' "$WORK/$name.tcpdump.log" \
        || die "tcpdump did not start: $(cat "$WORK/$name.tcpdump.log")"
}

cap_stop() {
    sleep 1   # let the last replies arrive
    stop "$CAP_PID"
    [[ -s $CAP_FILE ]] || die "capture $CAP_FILE is empty"
    if ! grep -q '^0 packets dropped by kernel' "$WORK/$(basename "$CAP_FILE").tcpdump.log"; then
        log "warning: tcpdump reports kernel drops for $(basename "$CAP_FILE")"
    fi
}

# ------------------------------------------------------------ benign DNS ---
# Deterministic list of ordinary queries (dig batch lines). $1 = count, $2 = seed.
benign_queries() {
    local n=$1 seed=$2 i
    local a_names=(www.shop.example shop.example api.shop.example static.shop.example
                   img1.cdn.shop.example cdn.shop.example mail.corp.example
                   webmail.corp.example intranet.corp.example wiki.corp.example
                   git.corp.example vpn.corp.example ntp.corp.example
                   printer1.corp.example dc1.corp.example www.portal.example
                   login.portal.example news.portal.example update.vendor.example)
    local aaaa_names=(www.shop.example api.shop.example mail.corp.example
                      git.corp.example www.portal.example news.portal.example)
    local other=("corp.example MX" "shop.example MX" "portal.example MX"
                 "corp.example TXT" "_dmarc.corp.example TXT" "shop.example TXT"
                 "sel1._domainkey.corp.example TXT" "_ldap._tcp.corp.example SRV"
                 "_kerberos._udp.corp.example SRV" "_imaps._tcp.corp.example SRV"
                 "www.shop.example HTTPS" "www.portal.example HTTPS"
                 "corp.example SOA" "shop.example NS")
    local ptrs=(10.53.10.10 10.53.10.11 10.53.20.25 10.53.20.10 10.53.30.10
                10.53.20.50 10.53.10.99 10.53.0.10)
    local typos=("wwww.shop.example A" "www.shpo.example A" "mial.corp.example A"
                 "intarnet.corp.example A" "wiki.crop.example A" "shop.exmaple A"
                 "login.portl.example AAAA" "updates.vendor.example A"
                 "www.shop.example.corp.example A" "printer2.corp.example A")
    RANDOM=$seed
    for ((i = 0; i < n; i++)); do
        local r=$((RANDOM % 100)) line
        if ((r < 45)); then line="${a_names[RANDOM % ${#a_names[@]}]} A"
        elif ((r < 62)); then line="${aaaa_names[RANDOM % ${#aaaa_names[@]}]} AAAA"
        elif ((r < 78)); then line="${other[RANDOM % ${#other[@]}]}"
        elif ((r < 88)); then line="-x ${ptrs[RANDOM % ${#ptrs[@]}]}"
        else line="${typos[RANDOM % ${#typos[@]}]}"
        fi
        # some over TCP, some without EDNS, like a mix of stub resolvers
        if ((RANDOM % 10 == 0)); then line="+tcp $line"
        elif ((RANDOM % 4 == 0)); then line="+noedns $line"
        fi
        echo "$line"
    done
}

# run_benign SRC_IP COUNT CHUNK PAUSE SEED : paced dig batches from SRC_IP
run_benign() {
    local src=$1 n=$2 chunk=$3 pause=$4 seed=$5
    local qf="$WORK/benign.$src.queries"
    benign_queries "$n" "$seed" >"$qf"
    split -l "$chunk" -d -a 3 "$qf" "$qf."
    local f
    local pre="-b $src @$R_IP +tries=1 +time=2 "
    for f in "$qf".[0-9][0-9][0-9]; do
        # dig ignores +tcp on batch-file lines, so TCP queries get their own run
        grep -v '^+tcp ' "$f" | sed "s/^/$pre/" >"$f.udp" || true
        grep '^+tcp ' "$f" | sed "s/^+tcp /$pre/" >"$f.tcp" || true
        [[ -s $f.udp ]] && { inC timeout 20 dig -f "$f.udp" >>"$WORK/benign.$src.dig.log" 2>&1 || true; }
        [[ -s $f.tcp ]] && { inC timeout 20 dig +tcp -f "$f.tcp" >>"$WORK/benign.$src.dig.log" 2>&1 || true; }
        sleep "$pause"
    done
}

# ---------------------------------------------------------------- iodine ---
# iodine_session NAME DOMAIN TUNNET_SERVER_IP PINGS SERVER_FOR_CLIENT [iodine opts...]
iodine_session() {
    local name=$1 domain=$2 tun_ip=$3 pings=$4 nsaddr=$5; shift 5
    log "$name: iodined $tun_ip/27 $domain; iodine $* $nsaddr $domain"
    bg "$NS_S" 120 "$WORK/$name.iodined.log" \
        iodined -f -c -l "$S_IP" -p 53 -P "$PASS" "$tun_ip/27" "$domain"
    local srv=$BG
    wait_for 10 "iodined" inS ss -Hlun "sport = :53" \
        || die "iodined did not start: $(cat "$WORK/$name.iodined.log")"
    # a small payload to pull through the tunnel (bounded: one connection)
    if [[ -n ${IODINE_XFER:-} ]]; then
        seq -f 'dnsguard sample line %05g' 1 "$IODINE_XFER" >"$WORK/$name.payload"
    fi
    IODINE_CLIENT_PID=""
    bg "$NS_C" 90 "$WORK/$name.iodine.log" \
        iodine -f -P "$PASS" "$@" "$nsaddr" "$domain"
    local cli=$BG
    IODINE_CLIENT_PID=$cli
    if ! wait_for 45 "tunnel" grep -q 'Connection setup complete' "$WORK/$name.iodine.log"; then
        cat "$WORK/$name.iodine.log" >&2
        die "$name: iodine tunnel did not come up"
    fi
    local cip
    cip=$(inC ip -4 -o addr show dev dns0 | awk '{print $4}' | cut -d/ -f1)
    log "$name: tunnel up, client tun address $cip"
    inC timeout 60 ping -c "$pings" -i 0.3 -s 200 -W 5 "$tun_ip" >"$WORK/$name.ping.log" 2>&1 \
        || { cat "$WORK/$name.ping.log" >&2; die "$name: ping through the tunnel failed"; }
    log "$name: $(grep -E 'packets transmitted' "$WORK/$name.ping.log")"
    if [[ -n ${IODINE_XFER:-} ]]; then
        bg "$NS_S" 60 "$WORK/$name.socat.log" \
            socat -u "OPEN:$WORK/$name.payload" "TCP-LISTEN:9000,bind=$tun_ip,reuseaddr"
        local sp=$BG
        wait_for 10 "socat" inS ss -Hltn "sport = :9000" || die "$name: socat did not listen"
        inC timeout 60 nc -w 20 "$tun_ip" 9000 </dev/null >"$WORK/$name.received" \
            || die "$name: transfer through the tunnel failed"
        wait "$sp" 2>/dev/null || true
        cmp -s "$WORK/$name.payload" "$WORK/$name.received" \
            || die "$name: transferred file differs"
        log "$name: transferred $(wc -c <"$WORK/$name.received") bytes through the tunnel"
    fi
    sleep 1
    stop "$cli"
    stop "$srv"
}

# --------------------------------------------------------------- dns2tcp ---
# dns2tcp_session NAME TYPE
dns2tcp_session() {
    local name=$1 type=$2 domain=d2t.tunnel.example
    log "$name: dns2tcpd $domain resource blob; dns2tcpc -T $type"
    cat >"$WORK/$name.dns2tcpd.conf" <<EOF
listen = $S_IP
port = 53
domain = $domain
key = $D2T_KEY
resources = blob:127.0.0.1:7000
EOF
    seq -f 'dnsguard dns2tcp sample record %05g' 1 120 >"$WORK/$name.payload"     # ~4 KB
    seq -f 'upload line %04g' 1 100 >"$WORK/$name.upload"                        # ~1.6 KB
    # the TCP service behind the tunnel: reads the upload, then sends the
    # payload in three parts a second apart (so the client's polling shows)
    local pf="$WORK/$name.payload"
    {
        echo "head -c $(wc -c <"$WORK/$name.upload") >'$WORK/$name.uploaded'"
        echo "sed -n 1,40p '$pf'; sleep 1"
        echo "sed -n 41,80p '$pf'; sleep 1"
        echo "sed -n '81,\$p' '$pf'"
    } >"$WORK/$name.service.sh"
    bg "$NS_S" 90 "$WORK/$name.socat.log" \
        socat "TCP-LISTEN:7000,bind=127.0.0.1,reuseaddr" "EXEC:sh $WORK/$name.service.sh"
    local svc=$BG
    bg "$NS_S" 90 "$WORK/$name.dns2tcpd.log" dns2tcpd -F -d 1 -f "$WORK/$name.dns2tcpd.conf"
    local srv=$BG
    wait_for 10 "dns2tcpd" inS ss -Hlun "sport = :53" \
        || die "dns2tcpd did not start: $(cat "$WORK/$name.dns2tcpd.log")"
    bg "$NS_C" 90 "$WORK/$name.dns2tcpc.log" \
        dns2tcpc -f /dev/null -z "$domain" -k "$D2T_KEY" -r blob -T "$type" -l 4444 "$R_IP"
    local cli=$BG
    wait_for 15 "dns2tcpc" inC ss -Hltn "sport = :4444" \
        || { cat "$WORK/$name.dns2tcpc.log" >&2; die "$name: dns2tcpc did not listen"; }
    inC timeout 60 nc -w 30 127.0.0.1 4444 <"$WORK/$name.upload" >"$WORK/$name.received" || true
    cmp -s "$WORK/$name.payload" "$WORK/$name.received" \
        || { cat "$WORK/$name.dns2tcpc.log" >&2; die "$name: downloaded data differs ($(wc -c <"$WORK/$name.received") bytes)"; }
    cmp -s "$WORK/$name.upload" "$WORK/$name.uploaded" \
        || die "$name: uploaded data differs"
    log "$name: moved $(wc -c <"$WORK/$name.uploaded") bytes up and $(wc -c <"$WORK/$name.received") bytes down"
    sleep 1
    stop "$cli"
    stop "$srv"
    stop "$svc"
}

# ---------------------------------------------------------------- verify ---
pkts()   { capinfos -M -c -T "$1" | awk 'NR==2{print $2}'; }
count()  { tshark -r "$1" -Y "$2" 2>/dev/null | wc -l; }
qnames() { tshark -r "$1" -Y "$2" -T fields -e dns.qry.name 2>/dev/null | sort -u | wc -l; }

verify_tunnel_domain() {  # FILE DOMAIN MIN_DISTINCT_QNAMES
    local f=$1 dom=$2 min=$3 n
    n=$(qnames "$f" "dns.flags.response == 0 && dns.qry.name contains \"$dom\"")
    ((n >= min)) || die "$(basename "$f"): only $n distinct query names under $dom (want >= $min)"
    log "verify $(basename "$f"): $(pkts "$f") packets, $n distinct query names under $dom"
}

verify_all() {
    local w=$WORK
    verify_tunnel_domain "$w/iodine_null.pcap" t1.tunnel.example 50
    verify_tunnel_domain "$w/iodine_txt_base32.pcap" t2.tunnel.example 50
    verify_tunnel_domain "$w/iodine_raw.pcap" t3.tunnel.example 3
    verify_tunnel_domain "$w/dns2tcp_txt.pcap" d2t.tunnel.example 20
    verify_tunnel_domain "$w/dns2tcp_key.pcap" d2t.tunnel.example 20
    verify_tunnel_domain "$w/mixed_iodine_and_benign.pcap" t4.tunnel.example 50
    # record types actually used
    local n
    n=$(count "$w/iodine_null.pcap" 'dns.flags.response == 1 && dns.resp.type == 10')
    ((n > 50)) || die "iodine_null.pcap: only $n NULL answers"
    n=$(count "$w/iodine_txt_base32.pcap" 'dns.flags.response == 1 && dns.resp.type == 16')
    ((n > 50)) || die "iodine_txt_base32.pcap: only $n TXT answers"
    n=$(count "$w/dns2tcp_txt.pcap" 'dns.flags.response == 0 && dns.qry.type == 16')
    ((n > 20)) || die "dns2tcp_txt.pcap: only $n TXT queries"
    n=$(count "$w/dns2tcp_key.pcap" 'dns.flags.response == 0 && dns.qry.type == 25')
    ((n > 20)) || die "dns2tcp_key.pcap: only $n KEY queries"
    # raw mode: iodine's raw packets start with the magic 10:d1:9e and are
    # sent straight to the server's address, not to the resolver
    n=$(count "$w/iodine_raw.pcap" "udp.port == 53 && ip.addr == $S_IP && udp.payload[0:3] == 10:d1:9e")
    ((n > 20)) || die "iodine_raw.pcap: only $n raw (non-DNS) iodine packets"
    log "verify iodine_raw.pcap: $n non-DNS raw-mode UDP/53 packets between $C_IP and $S_IP"
    # benign: only the resolver, some TCP, some NXDOMAIN
    n=$(count "$w/benign_lookups.pcap" 'dns.flags.response == 0')
    local tcpq nx
    tcpq=$(count "$w/benign_lookups.pcap" 'tcp && dns.flags.response == 0')
    nx=$(count "$w/benign_lookups.pcap" 'dns.flags.rcode == 3')
    ((n >= 100 && tcpq > 0 && nx > 0)) || die "benign_lookups.pcap: $n queries, $tcpq over TCP, $nx NXDOMAIN"
    log "verify benign_lookups.pcap: $(pkts "$w/benign_lookups.pcap") packets, $n queries ($tcpq over TCP), $nx NXDOMAIN"
    n=$(count "$w/mixed_iodine_and_benign.pcap" "ip.src == $C2_IP && dns.flags.response == 0")
    ((n >= 50)) || die "mixed: only $n benign queries"
    log "verify mixed_iodine_and_benign.pcap: $n benign queries from $C2_IP"
    local sz
    sz=$(stat -c %s "$w/mixed_iodine_and_benign.pcap")
    ((sz <= 102400)) || die "mixed_iodine_and_benign.pcap is $sz bytes (> 100 KB)"
}

# ------------------------------------------------------- README table ---
write_table() {
    local readme="$OUT_DIR/README.md" tbl="$WORK/table.md" f
    {
        echo "| file | packets | bytes | first packet (UTC) | duration |"
        echo "| --- | ---: | ---: | --- | ---: |"
        for f in "${PCAPS[@]}"; do
            local p="$OUT_DIR/$f" first dur
            first=$(capinfos -M -T -a -r "$p" | awk -F'\t' '{print $2}')
            dur=$(capinfos -M -T -u -r "$p" | awk -F'\t' '{printf "%.1f s", $2}')
            echo "| \`$f\` | $(pkts "$p") | $(stat -c %s "$p") | $first | $dur |"
        done
        echo
        echo "Generated $(date -u +%Y-%m-%dT%H:%M:%SZ) with iodine $(iodine -v 2>&1 | awk '/version/{print $2}'), dns2tcp $(dns2tcpc -h 2>&1 | awk '/^dns2tcp v/{sub(/^v/, "", $2); print $2}'), dnsmasq $(dnsmasq --version | awk 'NR==1{print $3}'), tcpdump $(tcpdump --version 2>&1 | awk 'NR==1{print $3}'), $(dig -v 2>&1 | awk '{print $1, $2}' | sed 's/-Debian//')."
    } >"$tbl"
    [[ -f $readme ]] || return 0
    grep -q '<!-- BEGIN generated table -->' "$readme" || return 0
    awk -v tbl="$tbl" '
        /<!-- BEGIN generated table -->/ { print; while ((getline l < tbl) > 0) print l; skip = 1; next }
        /<!-- END generated table -->/   { skip = 0 }
        !skip { print }' "$readme" >"$WORK/README.new"
    cat "$WORK/README.new" >"$readme"
}

# ------------------------------------------------------------------ main ---
PCAPS=(iodine_null.pcap iodine_txt_base32.pcap iodine_raw.pcap dns2tcp_txt.pcap
       dns2tcp_key.pcap benign_lookups.pcap mixed_iodine_and_benign.pcap)

check_tools
# one run at a time (a second run would tear down the first one's namespaces)
LOCK_DIR=/run/lock; [[ -d $LOCK_DIR && -w $LOCK_DIR ]] || LOCK_DIR=/tmp
exec 9>"$LOCK_DIR/dnsguard-make-pcaps.lock"
flock -n 9 || die "another make_pcaps.sh run is in progress"
HAVE_LOCK=1
WORK=$(mktemp -d /tmp/dg-pcaps.XXXXXX)
log "workdir $WORK, output $OUT_DIR"
setup_net
start_resolver
log "network and resolver up"

# a. iodine, DNS path via the resolver, raw mode off, NULL (default) ------
cap_start iodine_null.pcap 2500 120
IODINE_XFER=200 iodine_session iodine_null t1.tunnel.example 10.53.101.1 20 "$R_IP" -r -T NULL
cap_stop

# b. iodine, TXT records with base32 downstream ---------------------------
cap_start iodine_txt_base32.pcap 2500 120
IODINE_XFER=120 iodine_session iodine_txt_base32 t2.tunnel.example 10.53.102.1 15 "$R_IP" -r -T TXT -O base32
cap_stop

# c. iodine, raw UDP mode, directly to the server --------------------------
cap_start iodine_raw.pcap 1500 120
IODINE_XFER=200 iodine_session iodine_raw t3.tunnel.example 10.53.103.1 20 "$S_IP"
grep -q 'raw login: OK' "$WORK/iodine_raw.iodine.log" \
    || { cat "$WORK/iodine_raw.iodine.log" >&2; die "iodine_raw: raw UDP mode was not used"; }
cap_stop

# d. dns2tcp TXT and KEY via the resolver -----------------------------------
cap_start dns2tcp_txt.pcap 2500 120
dns2tcp_session dns2tcp_txt TXT
cap_stop
cap_start dns2tcp_key.pcap 2500 120
dns2tcp_session dns2tcp_key KEY
cap_stop

# e. benign lookups only ----------------------------------------------------
cap_start benign_lookups.pcap 2500 120
log "benign_lookups: 240 paced queries from $C_IP"
run_benign "$C_IP" 240 8 0.4 5353
cap_stop

# f. mixed: a second host does ordinary lookups while the first runs iodine
cap_start mixed_iodine_and_benign.pcap 1200 120
log "mixed: benign queries from $C2_IP during an iodine session from $C_IP"
( run_benign "$C2_IP" 120 4 0.5 1053 ) &
BENIGN_PID=$!
BG_PIDS+=("$BENIGN_PID")
sleep 2
IODINE_XFER="" iodine_session mixed_iodine t4.tunnel.example 10.53.104.1 10 "$R_IP" -r
wait "$BENIGN_PID"
cap_stop

stop "$RESOLVER_PID"
verify_all

# all made and checked: replace the shipped files
for f in "${PCAPS[@]}"; do
    chmod 0644 "$WORK/$f"
    mv -f "$WORK/$f" "$OUT_DIR/$f"
done
write_table
log "done in $(( $(date +%s) - T0 )) s:"
for f in "${PCAPS[@]}"; do
    printf '    %-32s %6s packets %8s bytes\n' "$f" "$(pkts "$OUT_DIR/$f")" "$(stat -c %s "$OUT_DIR/$f")"
done
