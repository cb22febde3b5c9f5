#!/bin/bash
# examples/ci.sh: CI shell steps that provision one VM with the vmstrap
# tools, as one pipeline: a failed step stops the job with that step's
# status, and the document each step adds to is kept as the job's record.
#
#   examples/ci.sh IMAGE [NAME]
#
# Runs in the current directory (the workspace); OCI_FETCH_FLAGS=--insecure
# for a registry without TLS; IMGPREP_FLAGS="-k key.pub" for the key to log
# in with (the VM gets its own hostname, machine-id and host keys whatever
# is given); VMRUN_ACCEL=tcg where
# /dev/kvm cannot be trusted.  Leaves the VM running; prints its ssh
# address.
set -euo pipefail

image=${1:?usage: ci.sh IMAGE [NAME]}
name=${2:-ci-1}

# The first start or the warm path, whichever this workspace needs.
oci-fetch ${OCI_FETCH_FLAGS:-} "$image" |
	mkbase -s 15G |
	kextract |
	cowclone "$name" |
	imgprep ${IMGPREP_FLAGS:-} |
	vmrun -d > "$name.json"

jq -r '.vm | "\(.name) is up: ssh -p \(.ssh | split(":")[1]) root@127.0.0.1"' "$name.json"

# After the job (or a crash): stop it, and check (and repair what is safe)
# its disk.
finish() {
	vmrun -q stop "$name"
	imgcheck -q -p < "$name.json" > /dev/null ||
		echo "ci.sh: $name.img needed repairs (imgcheck -p: $?)" >&2
}
trap finish EXIT
vmrun ls | jq -r 'select(.state == "running") | .name' | grep -qx "$name"
