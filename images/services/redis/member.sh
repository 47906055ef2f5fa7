#!/bin/sh
# One member of the redis-sentinel service: a Redis server and a Sentinel beside it.
#
#   member.sh INDEX IP PEERS          PEERS: every member's address, the first one's first
#
# The first member starts as the primary, the others as its replicas; every Sentinel watches
# the first, with a quorum of a majority of the members. Both keep their configuration in the
# data dir, which Sentinel rewrites (CONFIG REWRITE) as it fails over, so a member that starts
# again comes back as what Sentinel last made it, not as what it was first.
set -eu
index=$1 ip=$2 peers=$3
first=${peers%%,*}
count=$(echo "$peers" | tr ',' '\n' | grep -c .)
quorum=$((count / 2 + 1))
data=/data
if [ ! -f "$data/redis.conf" ]; then
  {
    echo "port 6379"
    echo "bind 0.0.0.0"
    echo "protected-mode no"
    echo "dir $data"
    echo "appendonly yes"
    echo "appendfsync everysec"
    echo "replica-announce-ip $ip"
    if [ "$index" != 0 ]; then echo "replicaof $first 6379"; fi
  } > "$data/redis.conf"
fi
if [ ! -f "$data/sentinel.conf" ]; then
  {
    echo "port 26379"
    echo "protected-mode no"
    echo "dir $data"
    echo "sentinel announce-ip $ip"
    echo "sentinel monitor primary $first 6379 $quorum"
    echo "sentinel down-after-milliseconds primary 1000"
    echo "sentinel failover-timeout primary 5000"
    echo "sentinel parallel-syncs primary 1"
  } > "$data/sentinel.conf"
fi
redis-sentinel "$data/sentinel.conf" &
exec redis-server "$data/redis.conf"
