#!/bin/sh
# Start a Swarm node: a host key of its own, the deploy user's authorized key, sshd, an optional
# forward of a registry to 127.0.0.1 (a loopback registry needs no TLS), then dockerd.
#   AUTHORIZED_KEY     the public key the deploy user accepts
#   REGISTRY_FORWARD   PORT:ADDRESS forwards 127.0.0.1:PORT to ADDRESS:PORT
set -eu
[ -f /etc/ssh/ssh_host_ed25519_key ] || ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key
if [ -n "${AUTHORIZED_KEY:-}" ]; then
    install -d -m 0700 -o deploy -g deploy /home/deploy/.ssh
    printf '%s\n' "$AUTHORIZED_KEY" > /home/deploy/.ssh/authorized_keys
    chown deploy:deploy /home/deploy/.ssh/authorized_keys
    chmod 0600 /home/deploy/.ssh/authorized_keys
fi
# a node that was killed (a failure test) left its daemons' pid files behind
rm -f /var/run/docker.pid /run/sshd.pid /var/run/docker/containerd/containerd.pid
/usr/sbin/sshd -e 2>>/var/log/sshd.log
if [ -n "${REGISTRY_FORWARD:-}" ]; then
    port=${REGISTRY_FORWARD%%:*}
    address=${REGISTRY_FORWARD#*:}
    socat "TCP-LISTEN:${port},bind=127.0.0.1,fork,reuseaddr" "TCP:${address}:${port}" &
fi
exec dockerd --host unix:///var/run/docker.sock "$@"
