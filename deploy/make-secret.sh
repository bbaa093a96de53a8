#!/bin/sh
# Create the installation secret shared by every portal replica and Dask worker (docker-compose.yml
# mounts it as /run/secrets/medlabel_secret_key). Pseudonyms are keyed by it: make it once, back it
# up with the database, never change it. Run from the repository root; as root (or with sudo) it is
# also handed to uid 10001, the image's `medlabel` user, which must be able to read it.
set -eu
key=deploy/secrets/medlabel_secret_key
if [ -e "$key" ]; then
    echo "$key exists; keeping it (a new key would change every pseudonym)" >&2
    exit 0
fi
umask 077
mkdir -p deploy/secrets
head -c 32 /dev/urandom > "$key"  # 32 random bytes, as `medlabel init` makes them
chmod 600 "$key"
if [ "$(id -u)" = "0" ]; then
    chown 10001 "$key"
else
    echo "now run: sudo chown 10001 $key   (the containers run as uid 10001)" >&2
fi
echo "created $key"
