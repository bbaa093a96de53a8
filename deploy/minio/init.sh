#!/bin/sh
# One-shot (service minio-init): the `medlabel` bucket, not versioned (a deleted blob, such as the
# unmasked bytes a reviewer replaced, must not linger; versions of a bucket once versioned expire after
# a day), and the portal's access key, which may use that bucket only. Safe to run again.
set -eu
# Credentials from the secrets volume (`medlabel deploy secrets`), never from the compose file.
MINIO_ROOT_USER=$(cat /secrets/minio/root-user)
MINIO_ROOT_PASSWORD=$(cat /secrets/minio/root-password)
MEDLABEL_S3_ACCESS_KEY=$(cat /secrets/minio/s3-access-key)
MEDLABEL_S3_SECRET_KEY=$(cat /secrets/minio/s3-secret-key)
mc alias set local http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null
mc mb --ignore-existing local/medlabel
mc version suspend local/medlabel
mc ilm import local/medlabel < /deploy/minio/lifecycle.json
mc admin policy create local medlabel-store /deploy/minio/policy.json
mc admin user add local "$MEDLABEL_S3_ACCESS_KEY" "$MEDLABEL_S3_SECRET_KEY" >/dev/null
mc admin policy attach local medlabel-store --user "$MEDLABEL_S3_ACCESS_KEY" || true  # already attached
echo "bucket medlabel ready"
