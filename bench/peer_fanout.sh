#!/usr/bin/env bash
# Fan-out with the peer cache on and off: a server with an S3 class (private SeaweedFS), three
# mounts on this host (own peer ports), one file written, cold, read by 3 readers through the 3
# mounts; block-store GETs per mount from strata.stats. Needs root (FUSE, drop_caches) and an
# S3 store: `eval "$(bash scripts/s3.sh start DIR PORT)"` sets what it reads.
#
# Usage: SIZE=128m BIN=target/debug/strata bench/peer_fanout.sh
set -euo pipefail
: "${STRATA_TEST_S3_ENDPOINT:?start an S3 store first (scripts/s3.sh prints the variables)}"
BIN=${BIN:-$(dirname "$0")/../target/debug/strata}
SIZE=${SIZE:-256m}
W=$(mktemp -d /tmp/strata-peer-fanout.XXXXXX)
trap 'for p in $W/*.pid; do kill $(cat $p) 2>/dev/null || true; done; sleep 2; for m in $W/m1 $W/m2 $W/m3; do umount -l $m 2>/dev/null || true; done' EXIT
$BIN server --data $W/data --listen 127.0.0.1:19420 >$W/server.log 2>&1 & echo $! > $W/server.pid
for i in $(seq 50); do [[ -f $W/data/admin.token ]] && break; sleep 0.2; done
S="--server 127.0.0.1:19420 --token-file $W/data/admin.token"
$BIN storageclass create s3b --backend s3 --bucket strata-test --prefix bench-$$ --endpoint $STRATA_TEST_S3_ENDPOINT $S >/dev/null
$BIN volume create fan --class s3b $S >/dev/null
mkdir -p $W/m1 $W/m2 $W/m3
mountall() { # $1: on|off
  for i in 1 2 3; do
    extra=""; [[ $1 == on ]] && extra="--peer-cache 127.0.0.1:1943$i"
    $BIN mount fan $W/m$i $S --cache-size 1G --cache-dir $W/cache-$1-$i $extra >$W/mount$i-$1.log 2>&1 & echo $! > $W/m$i.pid
  done
  for i in 1 2 3; do for t in $(seq 600); do mountpoint -q $W/m$i && break; sleep 0.1; done; done
}
umountall() { for i in 1 2 3; do kill $(cat $W/m$i.pid); done; for i in 1 2 3; do while mountpoint -q $W/m$i; do sleep 0.1; done; done; rm -f $W/m?.pid; }
stats() { python3 -c "import os,sys; print(os.getxattr(sys.argv[1], 'strata.stats').decode())" $1; }
mountall off
$BIN bench --dir $W/m1 --workload fanout --phases setup --fanout-size $SIZE >/dev/null
umountall
for mode in off on; do
  mountall $mode
  if [[ $mode == on ]]; then for i in 1 2 3; do for t in $(seq 120); do stats $W/m$i | grep -q "peers=3" && break; sleep 0.1; done; done; fi
  sync; echo 3 > /proc/sys/vm/drop_caches
  echo "== peer cache $mode"
  $BIN bench --dir $W/m1 --workload fanout --phases read --fanout-readers 3 --fanout-dirs $W/m1,$W/m2,$W/m3 --fanout-size $SIZE 2>&1 | tail -5
  for i in 1 2 3; do echo "mount $i: $(stats $W/m$i)"; done
  umountall
done
