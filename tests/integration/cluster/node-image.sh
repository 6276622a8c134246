#!/bin/sh
# The cluster test's node image (tests/integration/cluster/mod.rs): a Debian
# 12 tree with dockerd, iptables and the distribution registry, made with
# debootstrap from Debian's packages and written as a tarball for
# `docker import`. The harness tags the image with a hash of this file, so
# any change here makes a new image.
# Usage: node-image.sh TREE TARBALL
set -eu
tree=$1
tarball=$2
mirror=${FORGE_CLUSTER_MIRROR:-http://deb.debian.org/debian}
debootstrap --variant=minbase \
    --include=docker.io,iptables,docker-registry,apache2-utils,ca-certificates,procps,iproute2 \
    bookworm "$tree" "$mirror"
# Debian's iptables defaults to the nft backend; the inner dockerd needs the
# legacy one, which works in any host kernel configuration.
chroot "$tree" update-alternatives --set iptables /usr/sbin/iptables-legacy
chroot "$tree" update-alternatives --set ip6tables /usr/sbin/ip6tables-legacy
chroot "$tree" apt-get clean
rm -rf "$tree"/var/lib/apt/lists/* "$tree"/var/cache/apt/*.bin
tar -C "$tree" --numeric-owner -cf "$tarball" .
