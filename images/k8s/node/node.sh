#!/bin/bash
# A Kubernetes node in a container: fix what the container hides or mounts differently, then
# start containerd, the control plane's components if this node is one, kubelet, kube-proxy
# and kube-router (NetworkPolicy), and stop them all when one of them stops (the platform restarts the node) or
# when the container is told to stop.
#
# Everything this node is comes from /etc/kubernetes, written by the platform
# (topologies/platforms/kubernetes.py): node.env (ROLE, NODE_NAME, NODE_IP, POD_CIDR, POD_ROUTES...),
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
    [ -d /sys/fs/cgroup/memory ] || return 0          # cgroup v2: nothing to fix
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
    install -d -m 0777 "$STATE/pv/data-0" "$STATE/pv/data-1"   # local volumes (topologies/kubecluster.py)
}

PIDS=()
run() {   # run NAME COMMAND...: in the background, its output prefixed with its name
    local name=$1
    shift
    "$@" > >(sed -u "s/^/$name: /") 2>&1 &
    PIDS+=("$!")
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
    run etcd etcd --name "$NODE_NAME" --data-dir "$STATE/etcd" \
        --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
        --listen-peer-urls http://127.0.0.1:2380 --log-level warn --logger zap \
        --auto-compaction-mode revision --auto-compaction-retention 10000 --snapshot-count 10000
    # shellcheck disable=SC2046
    run kube-apiserver kube-apiserver $(cat "$CONF/kube-apiserver.flags")
    wait_for kube-apiserver 120 curl -sfk --cacert "$CONF/pki/ca.pem" "https://127.0.0.1:6443/readyz"
    # shellcheck disable=SC2046
    run kube-controller-manager kube-controller-manager $(cat "$CONF/kube-controller-manager.flags")
    run kube-scheduler kube-scheduler --kubeconfig "$CONF/scheduler.kubeconfig" --leader-elect=false \
        --bind-address=127.0.0.1
    run coredns coredns -conf "$CONF/Corefile"
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
