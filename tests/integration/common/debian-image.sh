#!/bin/sh
# A Debian 12 tree made with debootstrap from Debian's packages, written as a
# tarball for `docker import` (common::debian_image). The harness tags the
# image with a hash of this file, the package list and the customization, so
# any change to one of them makes a new image.
# Usage: debian-image.sh TREE TARBALL PACKAGES [CUSTOMIZE]
#   PACKAGES   comma-separated, installed with their dependencies
#   CUSTOMIZE  a shell script run after the install with TREE as $1
set -eu
tree=$1
tarball=$2
packages=$3
customize=${4:-}
mirror=${FORGE_DEBIAN_MIRROR:-${FORGE_CLUSTER_MIRROR:-http://deb.debian.org/debian}}
debootstrap --variant=minbase --include="$packages" bookworm "$tree" "$mirror"
if [ -n "$customize" ]; then
    sh -eu "$customize" "$tree"
fi
chroot "$tree" apt-get clean
rm -rf "$tree"/var/lib/apt/lists/* "$tree"/var/cache/apt/*.bin
tar -C "$tree" --numeric-owner -cf "$tarball" .
