// The NetworkPolicy controller of the node image: kube-router's firewall (iptables and ipset),
// built from the Go module proxy like the rest (images/kubernetes.py) and run with its
// router and service proxy off (the bridge CNI routes pods, kube-proxy serves Services).
// kube-network-policies was the first choice; its nftables `queue` statement needs the
// kernel's nft_queue, which this kind of host lacks (iptables' NFQUEUE target it has).
module modematrix.local/kube-router

go 1.24.0

require github.com/cloudnativelabs/kube-router/v2 v2.1.0
