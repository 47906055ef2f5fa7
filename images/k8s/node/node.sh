#!/bin/bash
# A Kubernetes node in a container: fix what the container hides or mounts differently, then
# start containerd, the control plane's components if this node is one, kubelet, kube-proxy
# and kube-router (NetworkPolicy), and stop them all when one of them stops (the platform restarts the node) or
# when the container is told to stop.
#
# Everything this node is comes from /etc/kubernetes, written by the platform
# (topologies/kubernetes/clusters/): node.env (ROLE, NODE_NAME, NODE_IP, POD_CIDR, POD_ROUTES...),
# certificates, kubeconfigs, and the components' configuration files.
set -euo pipefail

CONF=/etc/kubernetes
STATE=/var/lib/mm-node          # a Docker volume: overlayfs snapshots need a real file system
# shellcheck source=/dev/null
. "$CONF/node.env"

log() { echo "node $NODE_NAME: $*"; }

# cgroup v1, as kind's entrypoint does it: Docker mounts each hierarchy from the container's
# own cgroup, but /proc/self/cgroup still names the full path, which kubelet and cAdvisor
# follow. Bind each hierarchy at that path too, and give kubelet its own root (/kubelet).
fix_cgroups() {
    if [ -f /sys/fs/cgroup/cgroup.controllers ]; then fix_cgroups_v2; return; fi
    local current
    current=$(grep -E '^[0-9]+:memory:' /proc/self/cgroup | cut -d: -f3)
    mount --make-rprivate /sys/fs/cgroup
    for hierarchy in /sys/fs/cgroup/*/; do
        hierarchy=${hierarchy%/}
        [ "$(stat -fc %T "$hierarchy")" = cgroupfs ] || continue
        if [ -n "$current" ] && [ "$current" != / ] && [ ! -d "$hierarchy$current" ]; then
            mkdir -p "$hierarchy$current"
            mount --bind "$hierarchy" "$hierarchy$current"
        fi
        mkdir -p "$hierarchy/kubelet"
        if [ "$(basename "$hierarchy")" = cpuset ]; then   # else joining the cgroup fails: ENOSPC
            cat "$hierarchy/cpuset.cpus" > "$hierarchy/kubelet/cpuset.cpus"
            cat "$hierarchy/cpuset.mems" > "$hierarchy/kubelet/cpuset.mems"
        fi
        mount --bind "$hierarchy/kubelet" "$hierarchy/kubelet"
    done
}

# cgroup v2 (unified), as kind's nodes have it: the container has a cgroup namespace of its own
# (the engine starts it with --cgroupns=private), so / here is its own cgroup and
# /proc/self/cgroup says "0::/". A cgroup may delegate controllers only while it holds no
# process itself: move this container's processes to /init.scope (what systemd does in a kind
# node), delegate every controller, and make kubelet's root (/kubelet). Untested on this
# project's machine (cgroup v1); the GitHub workflow's k8s job runs on cgroup v2 runners.
fix_cgroups_v2() {
    local root=/sys/fs/cgroup
    mount -o remount,rw "$root" 2>/dev/null || true     # read-only unless the container is privileged
    mkdir -p "$root/init.scope"
    local pid
    while read -r pid; do
        echo "$pid" > "$root/init.scope/cgroup.procs" 2>/dev/null || true   # a kernel thread cannot move
    done < "$root/cgroup.procs"
    mkdir -p "$root/kubelet"
    local controller
    for controller in $(cat "$root/cgroup.controllers"); do   # each alone: one refused leaves the others
        echo "+$controller" > "$root/cgroup.subtree_control" || log "cgroup v2: $controller not delegated"
        echo "+$controller" > "$root/kubelet/cgroup.subtree_control" 2>/dev/null || true
    done
}

prepare() {
    [ -s /etc/machine-id ] || tr -d - < /proc/sys/kernel/random/uuid > /etc/machine-id
    fix_cgroups
    mount --make-rshared /
    echo 1 > /proc/sys/net/ipv4/ip_forward
    modprobe br_netfilter 2>/dev/null || true
    if [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]; then
        echo 1 > /proc/sys/net/bridge/bridge-nf-call-iptables
    else
        log "warning: no br_netfilter; Service addresses will not work from pods on one node's bridge"
    fi
    for route in $POD_ROUTES; do                        # other nodes' pod ranges: via those nodes
        ip route replace "${route%=*}" via "${route#*=}"
    done
    # pods keep their own address towards other pods (etcd checks a peer's address against its
    # certificate), and leave the pod network as the node
    masquerade=(POSTROUTING -s "$POD_CIDR" ! -d "$POD_NETWORK" -j MASQUERADE)
    iptables -t nat -C "${masquerade[@]}" 2>/dev/null || iptables -t nat -A "${masquerade[@]}"
    mkdir -p "$STATE/containerd" "$STATE/etcd" /var/lib/kubelet /var/log/pods
    # the workers' local volumes' folders are made by the platform (layout.local_volume_script)
}

PIDS=()
run() {   # run NAME COMMAND...: in the background, its output prefixed with its name
    local name=$1
    shift
    "$@" > >(sed -u "s/^/$name: /") 2>&1 &
    PIDS+=("$!")
}

again() {   # again COMPONENT: run it with its flags file, again 2 s after each exit (as kubelet does)
    local component=$1
    while :; do
        # shellcheck disable=SC2046
        "$component" $(cat "$CONF/$component.flags") || log "$component exited ($?); again in 2 s"
        sleep 2
    done
}

wait_for() {   # wait_for WHAT SECONDS COMMAND...
    local what=$1 seconds=$2
    shift 2
    for _ in $(seq "$((seconds * 5))"); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    log "$what did not come up in $seconds s"
    return 1
}

stop_all() {   # stop_all EXIT_CODE
    log "stopping"
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait || true
    exit "$1"
}
trap 'stop_all 0' TERM INT

prepare
run containerd containerd --config "$CONF/containerd.toml"
wait_for containerd 30 ctr --address /run/containerd/containerd.sock version
if ! ctr -n k8s.io images ls -q | grep -qx "$PAUSE_IMAGE"; then
    ctr -n k8s.io images import /opt/modematrix/pause.tar >/dev/null
fi

if [ "$ROLE" = control-plane ]; then
    # one member, or one of three (peers over TLS on the node network): etcd.flags says which
    # shellcheck disable=SC2046
    run etcd etcd $(cat "$CONF/etcd.flags")
    # shellcheck disable=SC2046
    run kube-apiserver kube-apiserver $(cat "$CONF/kube-apiserver.flags")
    wait_for kube-apiserver 120 curl -sfk --cacert "$CONF/pki/ca.pem" "https://127.0.0.1:6443/readyz"
    # With several control planes these two are leader-elected, and a leader that cannot renew
    # its lease in time (its etcd slow while another control plane is down) exits by design;
    # kubelet would restart their static pods: so does this loop.
    run kube-controller-manager again kube-controller-manager
    run kube-scheduler again kube-scheduler
    # with several control planes, CoreDNS runs on their balancer instead (no Corefile here)
    if [ -f "$CONF/Corefile" ]; then run coredns coredns -conf "$CONF/Corefile"; fi
fi

run kubelet kubelet --config "$CONF/kubelet.yaml" --kubeconfig "$CONF/kubelet.kubeconfig" \
    --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --node-labels "$NODE_LABELS" \
    ${NODE_TAINTS:+--register-with-taints "$NODE_TAINTS"}
run kube-proxy kube-proxy --config "$CONF/kube-proxy.yaml" --hostname-override "$NODE_NAME"
# NetworkPolicy, enforced with iptables and ipset; routing and Services are the others' job.
# It exits while its Node is not registered yet (and before the platform grants it access):
# run it again until it stays, as a kubelet would restart its pod.
kube_router() {
    while :; do
        kube-router --kubeconfig "$CONF/kube-router.kubeconfig" --hostname-override "$NODE_NAME" \
            --run-firewall=true --run-router=false --run-service-proxy=false --enable-ipv6=false \
            --health-port 0 --metrics-port 0 -v 1 || log "kube-router exited ($?); again in 2 s"
        sleep 2
    done
}
run kube-router kube_router

log "started: ${PIDS[*]}"
set +e
wait -n "${PIDS[@]}"
status=$?
log "a component exited (status $status); stopping the node"
stop_all 1
