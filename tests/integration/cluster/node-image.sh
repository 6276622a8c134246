# The cluster test's node image (tests/integration/cluster/mod.rs) is a
# Debian 12 tree with dockerd, iptables and the distribution registry, made
# by common::debian_image; this runs in it after the install, with the
# tree as $1.
# Debian's iptables defaults to the nft backend; the inner dockerd needs the
# legacy one, which works in any host kernel configuration.
chroot "$1" update-alternatives --set iptables /usr/sbin/iptables-legacy
chroot "$1" update-alternatives --set ip6tables /usr/sbin/ip6tables-legacy
