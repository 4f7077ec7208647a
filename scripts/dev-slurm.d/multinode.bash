# shellcheck shell=bash
# Sourced by scripts/dev-slurm for `--nodes`: a MULTI-NODE Slurm on this one machine.
#
# One slurmctld on the host and one slurmd per node. Each slurmd runs in its own network, UTS
# (hostname) and mount namespace. The nodes are joined by a Linux bridge on a private /24 that is
# routed nowhere: the namespaces have no default route and ip_forward is left alone, so nothing
# leaves the machine. Each node sees a generated hosts file, bind-mounted over /etc/hosts inside its
# own mount namespace; the host's /etc/hosts is never edited.
# Facts behind the choices: /work/shared/notes/multi-node-and-containers.md, part 1.
#
# The cluster has its own name (labmn), ports, lab directory (DEV_SLURM_MN_DIR) and job ids
# (from FirstJobId=500000); it shares munged and the slurmdbd of the single-node dev cluster (it
# starts them when they are not running, never restarts them). The single-node clusters (lab,
# labna) are never touched.
#
# Exit status 4: this machine cannot run it (not root, no CAP_SYS_ADMIN/CAP_NET_ADMIN, e.g. an
# unprivileged container); the message says why (tests skip with it).

MN_MAX_NODES=200
MN_CPUS=4         # per node; config_overrides lets slurmd advertise more than the box's cores
MN_MEM_MB=8000    # per node (advertised; jobs are confined to what they ask for)
MN_GPUS=2         # fake GPUs (character devices) on every node but the last: partition gpu
MN_FIRST_JOB_ID=500000
MN_CANNOT=4       # exit status: namespaces cannot be made here

mn_vars() {
    LAB=${DEV_SLURM_MN_DIR:-/var/tmp/launcher-dev-slurm-mn}
    CLUSTER=labmn
    CTLD_PORT=7017
    SLURMD_PORT=7018
    ETC=$LAB/etc
    STATE=$LAB/state
    SPOOL=$LAB/spool
    LOGDIR=$LAB/log
    RUN=$LAB/run
    DEVDIR=$LAB/dev
    export SLURM_CONF=$ETC/slurm.conf
    SUBNET=${DEV_SLURM_MN_SUBNET:-10.213.0.0/24}
    BRIDGE=$CLUSTER-br
    # The single-node cluster's lab: its slurmdbd serves this cluster's accounting too.
    SN_LAB=${DEV_SLURM_DIR:-/var/tmp/launcher-dev-slurm}
}

mn_node() { echo "mn$1"; }              # node i: its Slurm NodeName and hostname
mn_ns() { echo "$CLUSTER-mn$1"; }       # its network namespace
mn_veth() { echo "$CLUSTER-v$1"; }      # the host end of its link to the bridge
mn_ip() { echo "$SUBNET_BASE.$((10 + $1))"; }

mn_cannot() {
    log "error: cannot run the multi-node cluster here: $*"
    exit "$MN_CANNOT"
}

# ---------------------------------------------------------------- checks

# SUBNET must be A.B.C.0/24 and used by nothing else on this machine (no address or route of another
# interface overlaps it).
mn_check_subnet() {
    [[ $SUBNET =~ ^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.0/24$ ]] ||
        die "DEV_SLURM_MN_SUBNET must look like A.B.C.0/24 (got '$SUBNET')"
    local o
    for o in "${BASH_REMATCH[@]:1:3}"; do ((o <= 255)) || die "DEV_SLURM_MN_SUBNET: '$SUBNET' is not an IPv4 network"; done
    SUBNET_BASE=${SUBNET%.0/24}
    local ours net line dev dest
    ours=$(mn_ip2int "$SUBNET_BASE.0")
    while read -r line; do
        [[ -n $line ]] || continue
        dev=$(awk '{print $2}' <<<"$line")
        dest=$(awk '{print $4}' <<<"$line")
        [[ $dev == "$BRIDGE" ]] && continue
        if mn_overlaps "$ours" 24 "$dest"; then
            die "subnet $SUBNET is in use on this machine (address $dest on $dev): set DEV_SLURM_MN_SUBNET to a free A.B.C.0/24"
        fi
    done < <(ip -4 -o addr show)
    while read -r line; do
        dest=${line%% *}
        [[ -z $dest || $dest == default ]] && continue
        dev=$(sed -n 's/.* dev \([^ ]*\).*/\1/p' <<<"$line")
        [[ $dev == "$BRIDGE" ]] && continue
        [[ $dest == */* ]] || dest="$dest/32"
        if mn_overlaps "$ours" 24 "$dest"; then
            die "subnet $SUBNET overlaps the route '$line': set DEV_SLURM_MN_SUBNET to a free A.B.C.0/24"
        fi
    done < <(ip -4 route show)
    return 0
}

mn_ip2int() {
    local IFS=.
    # shellcheck disable=SC2086
    set -- $1
    echo $((($1 << 24) | ($2 << 16) | ($3 << 8) | $4))
}

# mn_overlaps INT PREFIX A.B.C.D/P: the two networks share an address.
mn_overlaps() {
    local a=$1 pa=$2 b p m mask
    b=$(mn_ip2int "${3%/*}")
    p=${3#*/}
    m=$((pa < p ? pa : p))
    mask=$(((0xffffffff << (32 - m)) & 0xffffffff))
    (((a & mask) == (b & mask)))
}

# Root with CAP_SYS_ADMIN (ip netns add mounts; unshare --uts --mount) and CAP_NET_ADMIN (bridge,
# veth). An unprivileged container has neither: say so (exit 4) instead of failing half-way.
mn_check_privileges() {
    [[ $EUID -eq 0 ]] || mn_cannot "it must run as root (namespaces, a bridge, Slurm daemons); you are uid $EUID"
    local t
    if ! command -v ip >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
        log "installing iproute2 (ip) with apt-get"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iproute2 >/dev/null 2>&1 || true
    fi
    for t in ip nsenter unshare flock; do
        command -v "$t" >/dev/null 2>&1 || mn_cannot "'$t' is not installed (iproute2, util-linux)"
    done
    local err
    if ! err=$(unshare --net --uts --mount true 2>&1); then
        mn_cannot "unshare --net --uts --mount failed (${err:-no message}): network/UTS/mount namespaces need CAP_SYS_ADMIN (root on a VM or a privileged container; an unprivileged container gets EPERM)"
    fi
}

# ---------------------------------------------------------------- network

mn_nodes_in_use() { # indices of this cluster's namespaces that exist now
    ip netns list 2>/dev/null | sed -n "s/^$CLUSTER-mn\([0-9][0-9]*\)\( .*\)\{0,1\}$/\1/p" | sort -n
}

mn_make_bridge() {
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        local err
        err=$(ip link add "$BRIDGE" type bridge 2>&1) ||
            mn_cannot "ip link add $BRIDGE type bridge failed (${err:-no message}): needs CAP_NET_ADMIN"
    fi
    ip -4 -o addr show dev "$BRIDGE" | grep -q " $SUBNET_BASE.1/24 " ||
        ip addr replace "$SUBNET_BASE.1/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
}

# Namespace, veth pair (eth0 inside) and address of node i; no default route inside.
mn_make_node_net() {
    local i=$1 ns veth ip err
    ns=$(mn_ns "$i")
    veth=$(mn_veth "$i")
    ip=$(mn_ip "$i")
    if [[ ! -e /run/netns/$ns ]]; then
        [[ -d /run/netns ]] || touch "$RUN/netns-dir-made-here"
        err=$(ip netns add "$ns" 2>&1) ||
            mn_cannot "ip netns add $ns failed (${err:-no message}): needs CAP_SYS_ADMIN"
    fi
    if ! ip link show "$veth" >/dev/null 2>&1; then
        ip -n "$ns" link del eth0 2>/dev/null || true
        ip link add "$veth" type veth peer name eth0 netns "$ns"
    fi
    ip link set "$veth" master "$BRIDGE" up
    ip -n "$ns" -4 -o addr show dev eth0 2>/dev/null | grep -q " $ip/24 " || ip -n "$ns" addr replace "$ip/24" dev eth0
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up
}

mn_node_net_ok() {
    local i=$1
    [[ -e /run/netns/$(mn_ns "$i") ]] && ip link show "$(mn_veth "$i")" 2>/dev/null | grep -q "master $BRIDGE" &&
        ip -n "$(mn_ns "$i")" -4 -o addr show dev eth0 2>/dev/null | grep -q " $(mn_ip "$i")/24 "
}

# Hosts running Docker load br_netfilter and set the iptables FORWARD policy to DROP, which would
# drop node-to-node traffic on our bridge (host-to-node traffic is not forwarded, so unaffected).
# Only there: accept forwarding within our bridge (removed again by down).
mn_forward_rule() {
    local nf=/proc/sys/net/bridge/bridge-nf-call-iptables what
    if ! command -v iptables >/dev/null 2>&1; then
        what="no iptables command"
    elif [[ $(cat "$nf" 2>/dev/null) != 1 ]]; then
        what="bridged traffic does not pass iptables (no br_netfilter or bridge-nf-call-iptables=0)"
    elif ! iptables -S FORWARD 2>/dev/null | grep -qx -- '-P FORWARD DROP'; then
        what="iptables FORWARD policy is not DROP"
    else
        if ! iptables -C FORWARD -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT 2>/dev/null; then
            iptables -I FORWARD -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT
            touch "$RUN/iptables-rule-added"
        fi
        what="iptables FORWARD policy DROP with br_netfilter (Docker?): added 'FORWARD -i $BRIDGE -o $BRIDGE -j ACCEPT'"
    fi
    echo "$what" >"$RUN/forward-check"
    [[ ${1:-} == quiet ]] || log "forwarding between nodes: $what"
}

mn_remove_forward_rule() {
    [[ -e $RUN/iptables-rule-added ]] || return 0
    if command -v iptables >/dev/null 2>&1; then
        iptables -D FORWARD -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT 2>/dev/null || true
    fi
    rm -f "$RUN/iptables-rule-added"
}

# ---------------------------------------------------------------- configuration

mn_write_hosts() {
    local n=$1 i
    {
        echo "# Generated by scripts/dev-slurm --nodes: the nodes' /etc/hosts (bind-mounted in their mount"
        echo "# namespaces; the host's /etc/hosts is not touched)."
        echo "127.0.0.1 localhost"
        echo "$SUBNET_BASE.1 $(hostname -s) $CLUSTER-ctl"
        for ((i = 1; i <= n; i++)); do
            echo "$(mn_ip "$i") $(mn_node "$i")"
        done
    } | write_if_changed "$ETC/hosts" 0644
}

mn_gpu_nodes() { # the nodes with fake GPUs: all but the last when there are several
    local n=$1
    ((n > 1)) && n=$((n - 1))
    if ((n == 1)); then echo "mn1"; else echo "mn[1-$n]"; fi
}

mn_make_fake_gpus() {
    local i f
    mkdir -p "$DEVDIR"
    for ((i = 0; i < MN_GPUS; i++)); do
        f=$DEVDIR/nvidia$i
        [[ -c $f ]] && continue
        rm -f "$f"
        mknod -m 0666 "$f" c 1 3
    done
}

# FirstJobId: this cluster's job ids start above every id the shared accounting database already
# holds for it, so that a fresh state directory (ids restarting) never collides with old rows
# (the single-node cluster resets the whole database instead; this one must not). Chosen once per
# state directory.
mn_first_job_id() {
    local f=$ETC/first-job-id max
    if [[ -d $STATE && -s $f ]]; then
        cat "$f"
        return
    fi
    max=$(SLURM_CONF=$(mn_dbd_client_conf) sacct -M "$CLUSTER" -X -n -P -a -o JobIDRaw -S 2000-01-01 -E now 2>/dev/null |
        sed -n 's/^\([0-9][0-9]*\).*/\1/p' | sort -n | tail -n 1)
    if [[ -n $max ]] && ((max >= MN_FIRST_JOB_ID)); then
        max=$(((max / 1000 + 1) * 1000))
    else
        max=$MN_FIRST_JOB_ID
    fi
    echo "$max" >"$f"
    echo "$max"
}

# The whole slurm.conf of an N-node cluster, on stdout.
mn_slurm_conf_text() {
    local n=$1 first_job_id=$2 proctrack task_plugin cg_note i nodes gpu_nodes gres
    if cgroup_v1_usable; then
        proctrack=proctrack/cgroup
        task_plugin=task/cgroup,task/affinity
        cg_note="# cgroup v1 is writable on this host: jobs are confined (cores, RAM); each node has its own
# cgroup root slurm_<NodeName> (Debian's slurmd is built with --enable-multiple-slurmd)."
    else
        proctrack=proctrack/linuxproc
        task_plugin=task/none
        cg_note="# No writable cgroup v1 hierarchy on this host: fallback, jobs are NOT confined."
    fi
    if ((n == 1)); then nodes=mn1; else nodes="mn[1-$n]"; fi
    gpu_nodes=$(mn_gpu_nodes "$n")
    cat <<EOF
# Generated by scripts/dev-slurm up --nodes $n; rewritten on every 'up' (edit the script, not this file).
ClusterName=$CLUSTER
# slurmctld runs on the host and accepts only its own host name here; the nodes reach it through
# the bridge address.
SlurmctldHost=$(hostname -s)($SUBNET_BASE.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$CTLD_PORT
# The same port in every node's network namespace.
SlurmdPort=$SLURMD_PORT
StateSaveLocation=$STATE
SlurmdSpoolDir=$SPOOL/%n
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd-%n.pid
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
MpiDefault=none
MailProg=/bin/true
# Job ids of this cluster start here (mn_first_job_id in scripts/dev-slurm.d/multinode.bash).
FirstJobId=$first_job_id

AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=10

$cg_note
ProctrackType=$proctrack
TaskPlugin=$task_plugin

# pyxis (srun --container-*) once 'up --nodes N --containers' has built it: for this cluster only.
PlugStackConfig=$ETC/plugstack.conf

SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
SchedulerParameters=bf_interval=1,sched_interval=2
EnforcePartLimits=ALL
DependencyParameters=kill_invalid_depend
MaxArraySize=1001
JobRequeue=1
KillWait=5
MinJobAge=300
ReturnToService=2
# A dead node is DOWN (its jobs NODE_FAIL or requeued) ~30 s after it stops answering (default 300 s).
SlurmdTimeout=20

GresTypes=gpu
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
AccountingStorageTRES=gres/gpu
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none

# More CPUs and memory than the box has, split over the nodes; the GPUs are fake (gres.conf).
SlurmdParameters=config_overrides
EOF
    for ((i = 1; i <= n; i++)); do
        gres=""
        if ((n == 1 || i < n)); then gres=" Gres=gpu:$MN_GPUS"; fi
        echo "NodeName=$(mn_node "$i") NodeAddr=$(mn_ip "$i") CPUs=$MN_CPUS Boards=1 SocketsPerBoard=1 CoresPerSocket=$MN_CPUS ThreadsPerCore=1 RealMemory=$MN_MEM_MB$gres State=UNKNOWN"
    done
    echo "PartitionName=debug Nodes=$nodes Default=YES MaxTime=04:00:00 State=UP"
    echo "PartitionName=gpu Nodes=$gpu_nodes MaxTime=1-00:00:00 State=UP"
}

# Writes every config; succeeds (0) iff one that the daemons read at start changed.
mn_write_configs() {
    local n=$1 changed=1 first
    first=$(mn_first_job_id)
    mn_slurm_conf_text "$n" "$first" | write_if_changed "$ETC/slurm.conf" 0644 && changed=0
    write_if_changed "$ETC/gres.conf" 0644 <<EOF && changed=0
# Generated by scripts/dev-slurm --nodes. Fake GPUs: character devices with /dev/null's numbers.
AutoDetect=off
NodeName=$(mn_gpu_nodes "$n") Name=gpu File=$DEVDIR/nvidia[0-$((MN_GPUS - 1))]
EOF
    write_if_changed "$ETC/cgroup.conf" 0644 <<EOF && changed=0
# Generated by scripts/dev-slurm --nodes.
CgroupPlugin=autodetect
ConstrainCores=yes
ConstrainRAMSpace=yes
ConstrainDevices=no
EOF
    mn_plugstack_text | write_if_changed "$ETC/plugstack.conf" 0644 && changed=0
    mn_write_hosts "$n" && changed=0
    return "$changed"
}

# ---------------------------------------------------------------- daemons

# mn_slurmd_pid I: the pid of node I's slurmd, if it runs in node I's network namespace.
mn_slurmd_pid() {
    local node ns pid
    node=$(mn_node "$1")
    ns=$(mn_ns "$1")
    pid=$(daemon_pid slurmd "$RUN/slurmd-$node.pid") || return 1
    [[ -e /run/netns/$ns ]] || return 1
    [[ $(readlink "/proc/$pid/ns/net" 2>/dev/null) == "net:[$(stat -L -c %i "/run/netns/$ns")]" ]] || return 1
    echo "$pid"
}

# A client-only slurm.conf for talking to the shared slurmdbd before this cluster's own slurm.conf
# exists (its FirstJobId comes from the accounting database: mn_first_job_id).
mn_dbd_client_conf() {
    write_if_changed "$ETC/accounting-client.conf" 0644 <<EOF || true
# Generated by scripts/dev-slurm --nodes: sacct/sacctmgr against the shared slurmdbd only.
ClusterName=$CLUSTER
SlurmctldHost=localhost
AuthType=auth/munge
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
EOF
    echo "$ETC/accounting-client.conf"
}

mn_dbd_ok() { SLURM_CONF=$(mn_dbd_client_conf) sacctmgr -n -P list cluster format=cluster >/dev/null 2>&1; }

# Accounting: the single-node cluster's munged, MariaDB and slurmdbd. Started (with that cluster's
# own functions, settings and lock) only when they are not running; never restarted.
mn_ensure_slurmdbd() {
    if is_running slurmdbd "$SN_LAB/run/slurmdbd.pid" && is_running munged "$MUNGE_PID"; then
        return 0
    fi
    log "slurmdbd or munged (shared with the single-node dev cluster) is not running: starting it"
    (
        exec 8>&- # our lock must not be inherited by the daemons started here
        LAB=$SN_LAB ETC=$SN_LAB/etc STATE=$SN_LAB/state LOGDIR=$SN_LAB/log RUN=$SN_LAB/run
        # A new state directory of the single-node cluster means its job ids restart: its own 'up'
        # resets the accounting database then, and so do we when we start slurmdbd first.
        FRESH_STATE=0
        [[ -d $STATE ]] || FRESH_STATE=1
        take_lock
        mkdir -p "$ETC" "$LOGDIR" "$RUN"
        write_slurmdbd_conf || true
        start_munged
        start_mariadbd
        if ! is_running slurmdbd "$RUN/slurmdbd.pid"; then
            setup_database
            SLURM_CONF=$ETC/slurm.conf slurmdbd </dev/null 9>&- >>"$LOGDIR/slurmdbd.out" 2>&1 ||
                die_log "$LOGDIR/slurmdbd.log" "slurmdbd failed to start"
        fi
    )
    wait_ready slurmdbd "$SN_LAB/run/slurmdbd.pid" "$SN_LAB/log/slurmdbd.log" 30 mn_dbd_ok
}

mn_ensure_accounting() {
    if [[ -z $(sacctmgr -n -P list cluster where name="$CLUSTER" format=cluster 2>/dev/null) ]]; then
        log "registering cluster '$CLUSTER' in accounting"
        sacctmgr -i add cluster "$CLUSTER" >/dev/null
    fi
    if [[ -z $(sacctmgr -n -P list assoc where cluster="$CLUSTER" user=root format=user) ]]; then
        sacctmgr -i add user root account=root cluster="$CLUSTER" >/dev/null
    fi
}

mn_start_slurmctld() {
    is_running slurmctld "$RUN/slurmctld.pid" && return 0
    log "starting slurmctld"
    slurmctld </dev/null 8>&- 9>&- >>"$LOGDIR/slurmctld.out" 2>&1 ||
        die_log "$LOGDIR/slurmctld.log" "slurmctld failed to start"
    wait_ready slurmctld "$RUN/slurmctld.pid" "$LOGDIR/slurmctld.log" 30 slurmctld_ok
}

declare -A MN_LAUNCHED=()

# Node I's slurmd: in its network namespace (nsenter --net, not `ip netns exec`, which remounts /sys
# and so hides the cgroup mounts slurmd needs), a new UTS namespace (its hostname) and a new mount
# namespace (private propagation) where the generated hosts file covers /etc/hosts. slurmd
# daemonizes and stays in those namespaces; so do the jobs it starts.
mn_start_slurmd() {
    local i=$1 node ns
    node=$(mn_node "$i")
    ns=$(mn_ns "$i")
    mn_slurmd_pid "$i" >/dev/null && return 0
    mkdir -p "$SPOOL/$node"
    log "starting slurmd of $node (netns $ns, $(mn_ip "$i"))"
    MN_LAUNCHED[$node]=$(date +%Y-%m-%dT%H:%M:%S)
    nsenter --net="/run/netns/$ns" unshare --uts --mount --propagation private \
        sh -c 'hostname "$1" && mount --bind "$2" /etc/hosts && exec slurmd -N "$1"' sh "$node" "$ETC/hosts" \
        </dev/null 8>&- 9>&- >>"$LOGDIR/slurmd-$node.out" 2>&1 ||
        die_log "$LOGDIR/slurmd-$node.log" "slurmd of $node failed to start (see also $LOGDIR/slurmd-$node.out)"
}

# Wait until every node of 1..N is usable and, for each slurmd started by this call, registered
# after its launch (SlurmdStartTime: the controller lists a node whose slurmd just died as idle until
# SlurmdTimeout). Nodes left DRAIN/DOWN in the saved state are resumed.
mn_wait_nodes() {
    local n=$1 start=$SECONDS i node state started line pending
    declare -A resumed=()
    while :; do
        pending=""
        declare -A st=() sst=()
        while read -r line; do
            node=${line%%|*}
            st[$node]=${line#*|}
        done < <(sinfo -h -N -o '%N|%t' 2>/dev/null)
        while read -r line; do
            node=$(sed -n 's/^NodeName=\([^ ]*\).*/\1/p' <<<"$line")
            [[ -n $node ]] && sst[$node]=$(sed -n 's/.*SlurmdStartTime=\([^ ]*\).*/\1/p' <<<"$line")
        done < <(scontrol -o show node 2>/dev/null)
        for ((i = 1; i <= n; i++)); do
            node=$(mn_node "$i")
            state=${st[$node]:-}
            started=${sst[$node]:-}
            if [[ -n ${MN_LAUNCHED[$node]:-} && (! $started =~ ^[0-9] || $started < "${MN_LAUNCHED[$node]}") ]]; then
                state="$state(not registered yet)"
            fi
            case $state in
                idle | mix | alloc | comp | resv | plnd) ;;
                drain | drng | down | fail | failg | inval)
                    if ((${resumed[$node]:-0} < 3)); then
                        log "$node is '$state': scontrol update nodename=$node state=resume"
                        scontrol update nodename="$node" state=resume >/dev/null 2>&1 || true
                        resumed[$node]=$((${resumed[$node]:-0} + 1))
                    fi
                    pending+=" $node($state)"
                    ;;
                *) pending+=" $node(${state:-unknown})" ;;
            esac
            if ((SECONDS - start >= 3)) && ! mn_slurmd_pid "$i" >/dev/null; then
                die_log "$LOGDIR/slurmd-$node.log" "slurmd of $node exited during startup"
            fi
        done
        [[ -z $pending ]] && return 0
        if ((SECONDS - start >= 60)); then
            sinfo -N -l >&2 || true
            die_log "$LOGDIR/slurmctld.log" "nodes not usable after 60 s:$pending"
        fi
        sleep 0.1
    done
}

# Node-to-node traffic (forwarded on the bridge, unlike host-to-node traffic) must pass: checked right
# after nodes start, so a host firewall shows up here and not as a hanging torchrun. mn1 connects to
# a port of mn2 where nothing listens: "Connection refused" means mn2's kernel answered; a firewall
# that DROPs makes it time out.
mn_check_node_to_node() {
    local n=$1 out
    ((n >= 2)) || return 0
    out=$(timeout 3 nsenter --net="/run/netns/$(mn_ns 1)" bash -c "exec 3<>/dev/tcp/$(mn_ip 2)/9" 2>&1) && return 0
    [[ $out == *"Connection refused"* ]] && return 0
    die "mn1 cannot reach mn2 ($(mn_ip 2)) across the bridge $BRIDGE (${out:-timed out}): does a firewall drop forwarded bridge traffic? ($(cat "$RUN/forward-check" 2>/dev/null))"
}

# SIGTERM the slurmd of the given node indices, wait for all (15 s), then SIGKILL what is left.
mn_stop_slurmds() {
    local i pid deadline
    local -a pids=()
    for i in "$@"; do
        pid=$(mn_slurmd_pid "$i") || continue
        kill -TERM "$pid" 2>/dev/null || true
        pids+=("$pid")
    done
    ((${#pids[@]})) || return 0
    deadline=$((SECONDS + 15))
    for pid in "${pids[@]}"; do
        while pid_alive "$pid" && ((SECONDS < deadline)); do sleep 0.05; done
        pid_alive "$pid" && kill -KILL "$pid" 2>/dev/null
    done
    log "stopped slurmd on node(s) $*"
}

# Everything still running in node I's network namespace is ours (slurmstepd, job processes of a
# killed node): SIGKILL it, then remove the namespace (its veth pair goes with it).
mn_remove_node_net() {
    local i=$1 ns pids tries
    ns=$(mn_ns "$i")
    if [[ -e /run/netns/$ns ]]; then
        for ((tries = 0; tries < 50; tries++)); do
            pids=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')
            [[ -z ${pids// /} ]] && break
            # shellcheck disable=SC2086
            kill -KILL $pids 2>/dev/null || true
            sleep 0.05
        done
        ip netns del "$ns"
    fi
    ip link del "$(mn_veth "$i")" 2>/dev/null || true
}

# Empty job cgroups that a killed node leaves behind (slurm_<node>/uid_0/job_5/step_0): rmdir, depth
# first, only folders of this cluster's node names; rmdir refuses cgroups that still hold tasks.
mn_remove_cgroups() {
    local i d
    for i in "$@"; do
        for d in /sys/fs/cgroup/*/"slurm_$(mn_node "$i")" /sys/fs/cgroup/"slurm_$(mn_node "$i")"; do
            [[ -d $d ]] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
        done
    done
    return 0
}

# Cancel this cluster's jobs (squeue with this cluster's SLURM_CONF lists no other cluster's) and wait
# up to $1 s for them to leave the queue (a job on a dead node stays listed until SlurmdTimeout; `down`
# kills what is left in the namespaces anyway).
mn_cancel_jobs() {
    is_running slurmctld "$RUN/slurmctld.pid" || return 0
    local ids i limit=${1:-15}
    mapfile -t ids < <(squeue -h -o %F 2>/dev/null | sort -u)
    ((${#ids[@]})) || return 0
    log "cancelling ${#ids[@]} job(s) of cluster $CLUSTER"
    scancel "${ids[@]}" 2>/dev/null || true
    for ((i = 0; i < limit * 5; i++)); do
        [[ -z $(squeue -h -o %i 2>/dev/null) ]] && return 0
        sleep 0.2
    done
    log "jobs still listed after $limit s (on a dead node?); going on"
}

mn_take_lock() {
    mkdir -p "$RUN"
    exec 8>"$RUN/dev-slurm.lock"
    if ! flock -n 8; then
        log "another dev-slurm --nodes up/down is running; waiting for it"
        flock -w 300 8 || die "could not take $RUN/dev-slurm.lock within 300 s"
    fi
}

mn_nodes_configured() { cat "$RUN/nodes" 2>/dev/null || true; }

# ---------------------------------------------------------------- commands

mn_print_env() {
    printf 'export SLURM_CONF=%q\n' "$SLURM_CONF"
    if mn_containers_ready 2>/dev/null; then
        printf 'export DEV_SLURM_MN_IMAGE=%q\n' "$MN_IMAGE"
    fi
}

# What the configs and the network depend on, besides this script: when it is unchanged and the
# script is not newer than the file holding it, a running cluster needs nothing done.
mn_up_key() {
    local pyxis=no
    [[ -f $CT_PYXIS_SO ]] && pyxis=yes
    echo "nodes=$1 subnet=$SUBNET host=${HOSTNAME%%.*} pyxis=$pyxis lab=$LAB"
}

# The no-op `up` of a running cluster, with almost no processes started (~0.1 s on a loaded 2-core
# machine, where each fork costs ~5-10 ms): the key, every daemon alive in its namespace (bash's
# -ef compares the namespace inodes), and one sinfo saying every node is usable.
mn_up_fast() {
    local n=$1 containers=$2 key i pid comm state ok=1 f
    [[ -f $RUN/up-key && -f $RUN/nodes ]] || return 1
    read -r key <"$RUN/up-key" || return 1
    [[ $key == "$(mn_up_key "$n")" ]] || return 1
    for f in "$SCRIPT_DIR/dev-slurm" "$SCRIPT_DIR"/dev-slurm.d/*.bash; do
        [[ $f -nt $RUN/up-key ]] && return 1
    done
    ((containers)) && ! mn_containers_ready && return 1
    { read -r pid <"$RUN/slurmctld.pid" && read -r comm <"/proc/$pid/comm"; } 2>/dev/null &&
        [[ $comm == slurmctld ]] || return 1
    # the shared slurmdbd (status relies on sacct)
    { read -r pid <"$SN_LAB/run/slurmdbd.pid" && read -r comm <"/proc/$pid/comm"; } 2>/dev/null &&
        [[ $comm == slurmdbd ]] || return 1
    for ((i = 1; i <= n; i++)); do
        { read -r pid <"$RUN/slurmd-mn$i.pid" && read -r comm <"/proc/$pid/comm"; } 2>/dev/null &&
            [[ $comm == slurmd && /proc/$pid/ns/net -ef /run/netns/$CLUSTER-mn$i ]] || return 1
    done
    [[ -e /run/netns/$CLUSTER-mn$((n + 1)) ]] && return 1
    while read -r state; do
        case $state in idle | mix | alloc | comp | resv | plnd) ;; *) ok=0 ;; esac
    done < <(sinfo -h -N -o %t 2>/dev/null || echo none)
    ((ok))
}

mn_up() {
    local n=$1 containers=$2 i restart=0 cold=0 before t0=$EPOCHREALTIME
    [[ $EUID -eq 0 ]] || mn_cannot "it must run as root (namespaces, a bridge, Slurm daemons); you are uid $EUID"
    mn_take_lock
    if mn_up_fast "$n" "$containers"; then
        mn_print_env
        return 0
    fi
    mn_check_privileges
    mn_check_subnet
    mkdir -p "$ETC" "$LOGDIR" "$RUN" "$SPOOL"
    chmod 0755 "$LAB" "$ETC" "$LOGDIR" "$RUN" "$SPOOL"
    install_packages
    ((containers)) && mn_containers
    mn_make_fake_gpus
    before=$(mn_nodes_configured)
    mn_ensure_slurmdbd
    [[ -d $STATE ]] || cold=1
    if mn_write_configs "$n"; then restart=1; fi
    mkdir -p "$STATE"
    chmod 0755 "$STATE"
    mn_ensure_accounting
    if [[ -n $before && $before != "$n" ]]; then
        log "node count $before -> $n: cancelling this cluster's jobs, restarting its daemons"
        mn_cancel_jobs
    fi
    if ((restart)) && { is_running slurmctld "$RUN/slurmctld.pid" || [[ -n $(mn_nodes_in_use) ]]; }; then
        # New nodes, hosts file (bind mounts pin the old inode) or plugins: restart every daemon of
        # this cluster (running jobs survive a restart of slurmctld and slurmd).
        log "configuration changed: restarting slurmctld and the slurmd of every node"
        mapfile -t idx < <(mn_nodes_in_use)
        mn_stop_slurmds "${idx[@]}"
        stop_daemon slurmctld "$RUN/slurmctld.pid" 8>&-
    fi
    # Surplus nodes of an earlier, larger cluster.
    for i in $(mn_nodes_in_use); do
        if ((i > n)); then
            mn_stop_slurmds "$i"
            mn_remove_node_net "$i"
            mn_remove_cgroups "$i"
            rm -rf "${SPOOL:?}/$(mn_node "$i")"
            log "removed surplus node $(mn_node "$i")"
        fi
    done
    mn_make_bridge
    for ((i = 1; i <= n; i++)); do
        mn_node_net_ok "$i" || { mn_make_node_net "$i"; cold=1; }
    done
    if ((cold || restart)) || [[ ! -e $RUN/forward-check ]]; then mn_forward_rule; fi
    echo "$n" >"$RUN/nodes"
    rm -f "$RUN/up-key"
    mn_start_slurmctld
    for ((i = 1; i <= n; i++)); do mn_start_slurmd "$i"; done
    mn_wait_nodes "$n"
    ((${#MN_LAUNCHED[@]})) && mn_check_node_to_node "$n"
    mn_up_key "$n" >"$RUN/up-key"
    log "up: $n node(s) ($(sinfo -h -o '%P %D %t' | tr '\n' ' ')), cluster $CLUSTER, lab $LAB, $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.2f", b-a}') s"
    mn_print_env
}

mn_down() {
    local i t0=$EPOCHREALTIME
    [[ $EUID -eq 0 ]] || die "'down' must run as root"
    mn_take_lock
    [[ -n ${SUBNET_BASE:-} ]] || SUBNET_BASE=${SUBNET%.0/24}
    mn_cancel_jobs 5
    mapfile -t idx < <(mn_nodes_in_use)
    mn_stop_slurmds "${idx[@]}"
    for i in "${idx[@]}"; do mn_remove_node_net "$i"; done
    # slurmd pid files whose namespace is already gone: stop those daemons too (by pid file and comm).
    local f
    for f in "$RUN"/slurmd-*.pid; do
        [[ -e $f ]] && stop_daemon slurmd "$f"
        rm -f "$f"
    done
    stop_daemon slurmctld "$RUN/slurmctld.pid"
    ip link del "$BRIDGE" 2>/dev/null || true
    mn_remove_forward_rule
    mapfile -t idx < <(for d in /sys/fs/cgroup/*/slurm_mn[0-9]* /sys/fs/cgroup/slurm_mn[0-9]*; do
        [[ -d $d ]] && echo "${d##*/slurm_mn}"; done | sort -un)
    mn_remove_cgroups "${idx[@]}"
    # `ip netns add` made /run/netns a mount point; undo that when it made the folder and nothing
    # else uses it now.
    if [[ -e $RUN/netns-dir-made-here && -d /run/netns && -z $(ls -A /run/netns) ]]; then
        umount /run/netns 2>/dev/null || true
        rmdir /run/netns 2>/dev/null || true
    fi
    rm -f "$RUN/nodes" "$RUN/forward-check" "$RUN/netns-dir-made-here" "$RUN/up-key"
    log "down: cluster $CLUSTER stopped, namespaces and bridge removed ($(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.2f", b-a}') s)"
}

mn_status() {
    local rc=0 i n pid
    n=$(mn_nodes_configured)
    if pid=$(daemon_pid slurmctld "$RUN/slurmctld.pid"); then
        printf '%-16s running (pid %s)\n' slurmctld "$pid"
    else
        printf '%-16s stopped\n' slurmctld
        rc=3
    fi
    for ((i = 1; i <= ${n:-0}; i++)); do
        if pid=$(mn_slurmd_pid "$i"); then
            printf '%-16s running (pid %s, netns %s, %s)\n' "slurmd $(mn_node "$i")" "$pid" "$(mn_ns "$i")" "$(mn_ip "$i")"
        else
            printf '%-16s stopped\n' "slurmd $(mn_node "$i")"
            rc=3
        fi
    done
    [[ -n $n ]] || { echo "no nodes (not up)"; rc=3; }
    if mn_containers_ready 2>/dev/null; then echo "containers: pyxis + enroot, image $MN_IMAGE"; else echo "containers: not built (up --nodes N --containers)"; fi
    if is_running slurmctld "$RUN/slurmctld.pid"; then sinfo || rc=3; fi
    return "$rc"
}

mn_main() {
    local cmd=$1 nodes=$2 containers=$3
    SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    mn_vars
    SUBNET_BASE=${SUBNET%.0/24}
    # shellcheck source=containers.bash
    source "$(dirname "${BASH_SOURCE[0]}")/containers.bash"
    case $cmd in
        up)
            [[ $nodes =~ ^[0-9]+$ ]] || die "--nodes needs a whole number of nodes (got '$nodes')"
            ((nodes >= 1 && nodes <= MN_MAX_NODES)) ||
                die "--nodes must be between 1 and $MN_MAX_NODES (got $nodes): a cluster needs at least one node"
            mn_up "$nodes" "$containers"
            ;;
        down) mn_down ;;
        status) mn_status ;;
        env) mn_print_env ;;
        *) die "unknown command '$cmd' for --nodes" ;;
    esac
}
