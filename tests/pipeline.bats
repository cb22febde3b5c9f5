#!/usr/bin/env bats
# The whole flow, end to end: vmstrap up from slicer-mac.yaml against a real
# docker-registry on loopback serving the test guest as an OCI image, VMs
# booted by QEMU under TCG; the warm path, launch, down, every reset recipe,
# crash recovery with imgcheck, a new tag; the examples.

load helpers

setup_file() {
	local L=$BATS_FILE_TMPDIR/layout
	"$VS_TOP/scripts/mkguest-image" -m stay -s amd64 "$L" one > /dev/null || return 1
	"$VS_TOP/scripts/mkguest-image" -m stay -s amd64 "$L" two "a second tag" > /dev/null || return 1
	ssh-keygen -q -t ed25519 -N '' -C pipeline@test -f "$BATS_FILE_TMPDIR/key"
	start_registry "$BATS_FILE_TMPDIR/registry"
	push "$L:one" demo:1
	push "$L:two" demo:2
}

teardown_file() {
	kill "$REG_PID" 2>/dev/null || true
}

setup() {
	cd "$T"
	export VMRUN_ACCEL=tcg
}

teardown() {
	kill_vms
}

# config TAG WEB_COUNT: slicer-mac.yaml with two host groups.
config() {
	cat > slicer-mac.yaml <<-EOF
	config:
	  image: "$REG/demo:$1"
	  insecure_registry: true
	  hypervisor: apple
	  ssh_keys: ["$(cat "$BATS_FILE_TMPDIR/key.pub")"]
	  host_groups:
	    - name: web
	      count: $2
	      vcpu: 1
	      ram_gb: 1
	      storage_size: 5G
	      network: {mode: nat, gateway: 192.168.64.1/24}
	    - name: db
	      count: 0
	      vcpu: 1
	      ram_gb: 1
	      storage_size: 6G
	EOF
}

# ids FILE...: inode and modification time of each, to tell a rebuild.
# A VM disk (*-N.img) by its inode alone: a running guest writes to it
# (and so changes its time) as soon as it boots, which under VALGRIND=1
# comes before vmstrap up returns; a new disk is a new inode (renamed into
# place).
ids() {
	local f
	for f in "$@"; do
		case $f in
		*-[0-9]*.img) stat -c '%n %i' "$f" ;;
		*) stat -c '%n %i %Y' "$f" ;;
		esac
	done
}

@test "first start, then the warm path: nothing rebuilt, disks kept, the VM's data and identity survive; vmstrap ssh" {
	config 1 2
	run_split vmstrap up
	assert_ok
	[[ $stderr == *"web-1: disk "*"its own identity (1 keys authorized)"* ]]
	[ "$(cut -d' ' -f1 known_hosts | sort | uniq -c | awk '{ printf "%s:%s ", $2, $1 }')" = "web-1:3 web-2:3 " ] ||
		fail "known_hosts: $(cat known_hosts)"
	[ "$(wc -l <<< "$output")" -eq 2 ]
	[ "$(jq -r .name <<< "$output" | tr '\n' ' ')" = "web-1 web-2 " ]
	[ "$(jq -r .group <<< "$output" | sort -u)" = web ]
	[ "$(jq -r .state <<< "$output" | sort -u)" = running ]
	[ -f oci-cache/index.json ] && [ -f web-base.img ] && [ -f db-base.img ]
	[ -f kernel/web/Image ] && [ -f kernel/web/initrd ] && [ -f kernel/db/Image ]
	[ ! -e db-1.img ]
	# the bases straight from the layers: the cache holds blobs, no tree
	[ ! -e oci-cache/rootfs ] || fail "a tree in the cache: $(ls oci-cache/rootfs)"
	[ "$(jq -r .from .web-base.img.json)" = layers ]
	[ "$(jq -r .from kernel/web/.Image.json)" = /boot/vmlinuz-"$(jq -r .version kernel/web/.Image.json)" ] ||
		[ "$(jq -r .source kernel/web/.Image.json)" = "$(jq -r .source .web-base.img.json)" ]
	[ "$(stat -c %s web-base.img)" = 5368709120 ] && [ "$(stat -c %s db-base.img)" = 6442450944 ]
	# in, each VM with its own identity, its host key the pinned one
	for n in web-1 web-2; do
		wait_console "$n" "vmstrap-guest: up $n boot 1" 60
		run_split vmstrap ssh -i "$BATS_FILE_TMPDIR/key" "$n" cat /etc/hostname /etc/machine-id /etc/ssh/ssh_host_ed25519_key.pub
		assert_ok
		[ "$(sed -n 1p <<< "$output")" = "$n" ]
		id[${n#web-}]=$(sed -n 2p <<< "$output")
		grep -qxF "$n $(sed -n 3p <<< "$output")" known_hosts || fail "$n's host key is not the pinned one"
	done
	[ "${id[1]}" != "${id[2]}" ]
	# options after NAME are the command's
	run_split vmstrap ssh -i "$BATS_FILE_TMPDIR/key" web-1 ls -d /etc
	assert_ok
	[ "$output" = /etc ]
	run_split vmstrap down
	assert_ok
	[ -z "$(vmrun ls | jq -r 'select(.state == "running") | .name')" ]
	keys=$(cat known_hosts)
	before=$(ids web-base.img db-base.img kernel/web/Image web-1.img web-2.img oci-cache/index.json)
	requests=$(registry_requests)
	run_split vmstrap up
	assert_ok
	[ "$(wc -l <<< "$output")" -eq 2 ]
	# no transfer beyond the manifest check (one per group), nothing rebuilt
	[ $(($(registry_requests) - requests)) -le 2 ] || fail "$(($(registry_requests) - requests)) requests"
	[ "$(ids web-base.img db-base.img kernel/web/Image web-1.img web-2.img oci-cache/index.json)" = "$before" ]
	wait_console web-1 "vmstrap-guest: up web-1 boot 2" 60
	# the kept disk kept its identity
	[ "$(cat known_hosts)" = "$keys" ]
	run_split vmstrap ssh -i "$BATS_FILE_TMPDIR/key" web-1 cat /etc/machine-id
	assert_ok
	[ "$output" = "${id[1]}" ]
	# running VMs are left alone by a third up
	run_split vmstrap up
	assert_ok
	[[ $stderr == *"web-1: already running"* ]]
	vmstrap -q down
	[ "$(debugfs -R 'cat /var/lib/vmstrap/boots' web-1.img 2>/dev/null)" = 2 ]
}

@test "launch adds the next free VM of a group, with the spare host keys made ahead; down stops the ones named" {
	config 1 1
	vmstrap -q up > /dev/null
	run_split vmstrap ssh web-9
	assert_refused 69 "VM web-9 is not running"
	run_split vmstrap ssh ../x
	assert_refused 64 "invalid VM name"
	run_split vmstrap ssh
	assert_refused 64 "ssh needs the NAME"
	# a spare set of host keys, made ahead (0700): the next new VM's
	for _ in $(seq 100); do [ -d .vmstrap-hostkeys ] && break; sleep 0.1; done
	[ "$(stat -c %a .vmstrap-hostkeys)" = 700 ]
	spare=$(cut -d' ' -f2 .vmstrap-hostkeys/ssh_host_ed25519_key.pub)
	run_split vmstrap launch web
	assert_ok
	[ "$(jq -r .name <<< "$output")" = web-2 ]
	[ -f web-2.img ]
	grep -q "^web-2 ssh-ed25519 $spare root@web-2\$" known_hosts || fail "web-2 did not get the spare keys"
	run_split vmstrap launch db
	assert_ok
	[ "$(jq -r .name <<< "$output")" = db-1 ]
	[ "$(jq -r .disk <<< "$output")" = "$T/db-1.img" ]
	run_split vmstrap launch nosuch
	assert_refused 78 "no host group nosuch"
	wait_console web-2 "vmstrap-guest: up web-2" 60
	run_split vmstrap down web-2
	assert_ok
	[ "$(vmrun ls | jq -r 'select(.name == "web-2") | .state')" = stopped ]
	[ "$(vmrun ls | jq -r 'select(.name == "web-1") | .state')" = running ]
	vmstrap -q down
}

@test "every reset recipe, refused while a VM uses what it would remove" {
	config 1 1
	vmstrap -q up > /dev/null
	wait_console web-1 "vmstrap-guest: up web-1 boot 1" 60
	run_split vmstrap reset --disk web-1
	assert_refused 75 "VM web-1 is running on web-1.img"
	run_split vmstrap reset --all
	assert_refused 75 "VM web-1 is running"
	[ -f web-1.img ] && [ -d oci-cache ]
	vmstrap -q down
	# --disk: the next up clones it afresh, with a new identity; the old
	# host keys unpinned
	old=$(grep '^web-1 ' known_hosts)
	run_split vmstrap reset --disk web-1
	assert_ok
	[ ! -e web-1.img ]
	! grep -q '^web-1 ' known_hosts || false
	vmstrap -q up > /dev/null
	! grep -qxF "$(head -1 <<< "$old")" known_hosts || false
	grep -q '^web-1 ' known_hosts
	wait_console web-1 "vmstrap-guest: up web-1 boot 1" 60
	vmstrap -q down
	# --base: the next up rebuilds it; the disk is kept
	base=$(ids web-base.img) disk=$(ids web-1.img)
	run_split vmstrap reset --base web
	assert_ok
	[ ! -e web-base.img ]
	vmstrap -q up > /dev/null
	[ "$(ids web-base.img)" != "$base" ]
	[ "$(ids web-1.img)" = "$disk" ]
	vmstrap -q down
	# --cache: the next up pulls the image again
	run_split vmstrap reset --cache
	assert_ok
	[ ! -e oci-cache ]
	requests=$(registry_requests)
	vmstrap -q up > /dev/null
	[ $(($(registry_requests) - requests)) -ge 3 ]
	vmstrap -q down
	# --all: back to a first start
	run_split vmstrap reset --all
	assert_ok
	[ "$(ls -A | grep -v "^separate-stderr-")" = slicer-mac.yaml ] || fail "left: $(ls -A)"
	run_split vmstrap up
	assert_ok
	[ -f web-1.img ]
	vmstrap -q down
}

@test "crash recovery: QEMU killed while the guest writes; imgcheck -p repairs; the VM boots again" {
	config 1 1
	vmstrap -q up > /dev/null
	wait_console web-1 "vmstrap-guest: up web-1 boot 1" 60
	vmstrap -q down
	# the same VM, its guest writing without end
	run_split vmrun -d -g web --kernel kernel/web/Image --initrd kernel/web/initrd --disk web-1.img -a vmstrap.mode=write
	assert_ok
	pid=$(jq -r .vm.pid <<< "$output")
	wait_console web-1 "vmstrap-guest: writing" 60
	sleep 2
	kill -9 "$pid"
	while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
	[ "$(vmrun ls | jq -r 'select(.name == "web-1") | .state')" = crashed ]
	run_split imgcheck -q -p web-1.img
	[ "$status" -le 1 ] || fail "imgcheck -p: status $status: $stderr"
	run_split imgcheck -q web-1.img
	assert_ok
	[ "$(jq -r '.check.images[0].state' <<< "$output")" = clean ]
	run_split vmstrap up
	assert_ok
	wait_console web-1 "vmstrap-guest: up web-1 boot 3" 60
	vmstrap -q down
}

@test "a new tag (new digest) rebuilds the base; clones of the old base still boot" {
	config 1 1
	vmstrap -q up > /dev/null
	wait_console web-1 "vmstrap-guest: up web-1 boot 1" 60
	vmstrap -q down
	old=$(jq -r .source .web-base.img.json)
	config 2 1
	run_split vmstrap up
	assert_ok
	new=$(jq -r .source .web-base.img.json)
	[ "$old" != "$new" ]
	[ "$(debugfs -R 'cat /etc/vmstrap-mark' web-base.img 2>/dev/null)" = "a second tag" ]
	# web-1 is a clone of the old base, kept: it boots
	wait_console web-1 "vmstrap-guest: up web-1 boot 2" 60
	run_split vmstrap launch web
	assert_ok
	wait_console web-2 "vmstrap-guest: up web-2 boot 1" 60
	[ "$(debugfs -R 'cat /etc/vmstrap-mark' web-2.img 2>/dev/null)" = "a second tag" ]
	vmstrap -q down
}

@test "bad configurations fail before anything is written" {
	run_split vmstrap -c none.yaml up
	assert_refused 66 "none.yaml"
	run_split vmstrap up
	assert_refused 66 "no slicer-mac.yaml here"
	printf 'config:\n  host_groups: [\n' > slicer-mac.yaml
	run_split vmstrap up
	assert_refused 78 "slicer-mac.yaml:[0-9]+:[0-9]+:"
	config 1 1
	sed -i 's/storage_size: 5G/storage_size: 4G/' slicer-mac.yaml
	run_split vmstrap up
	assert_refused 78 "storage_size: size '4G' is too small"
	config 1 1
	run_split vmstrap launch nosuch
	assert_refused 78 "no host group nosuch"
	run_split vmstrap frob
	assert_refused 64 "unknown command 'frob'"
	run_split vmstrap -x up
	assert_refused 64 "unknown option '-x'"
	[ "$(ls -A | grep -v "^separate-stderr-")" = slicer-mac.yaml ] || fail "left: $(ls -A)"
}

@test "df: the workspace's disks, what each really uses" {
	config 1 2
	vmstrap -q up > /dev/null
	vmstrap -q down
	run_split vmstrap df
	assert_ok
	[ "$(jq -r '.check.images[].path' <<< "$output" | sed "s|$T/||" | tr '\n' ' ')" = "db-base.img web-1.img web-2.img web-base.img " ]
	[[ $stderr == *"as du counts it"* ]]
}

@test "examples/Makefile: the first start once, then only what changed; disks kept" {
	mk() { make -s -f "$VS_TOP/examples/Makefile" IMAGE="$REG/demo:$1" VMS="vm-1 vm-2" SIZE=5G "${@:2}"; }
	run mk 1
	assert_success
	[ -f slicer-base.img ] && [ -f kernel/slicer/Image ] && [ -f vm-1.img ] && [ -f vm-2.img ]
	# each disk its own identity
	[ "$(debugfs -R 'cat /etc/hostname' vm-2.img 2>/dev/null)" = vm-2 ]
	[ "$(jq -r .prep.hostname vm-1.json)" = vm-1 ]
	before=$(ids slicer-base.img kernel/slicer/Image vm-1.img vm-2.img image.digest)
	requests=$(registry_requests)
	run mk 1
	assert_success
	[ "$(ids slicer-base.img kernel/slicer/Image vm-1.img vm-2.img image.digest)" = "$before" ]
	[ $(($(registry_requests) - requests)) -le 1 ]
	run mk 1 up
	assert_success
	[ "$(vmrun ls | jq -r 'select(.state == "running") | .name' | tr '\n' ' ')" = "vm-1 vm-2 " ]
	wait_console vm-1 "vmstrap-guest: up vm-1 boot 1" 60
	run mk 1 down
	assert_success
	# a new tag: the base and kernel again, the disks kept
	disks=$(ids vm-1.img vm-2.img)
	run mk 2
	assert_success
	[ "$(ids slicer-base.img)" != "$(grep slicer-base.img <<< "$before")" ]
	[ "$(ids vm-1.img vm-2.img)" = "$disks" ]
	[ "$(debugfs -R 'cat /etc/vmstrap-mark' slicer-base.img 2>/dev/null)" = "a second tag" ]
}

@test "examples/ci.sh: the pipeline form, set -euo pipefail, the VM up and then stopped and checked" {
	run_split env OCI_FETCH_FLAGS=--insecure "$VS_TOP/examples/ci.sh" "$REG/demo:1" job-1
	assert_ok
	[[ $output == "job-1 is up: ssh -p "[0-9]*" root@127.0.0.1" ]]
	[ "$(jq -r .vm.state job-1.json)" = running ]
	[ "$(jq -r .disk.path job-1.json)" = "$T/job-1.img" ]
	[ "$(jq -r .prep.hostname job-1.json)" = job-1 ]
	# the trap stopped it and checked its disk
	[ "$(vmrun ls | jq -r 'select(.name == "job-1") | .state')" = stopped ]
	# a failed step stops the job with its own status
	run_split "$VS_TOP/examples/ci.sh" "$REG/nosuch:1" job-2
	[ "$status" -ne 0 ]
	[ ! -e job-2.img ]
}

@test "kernel_file and kernel_image: the kernel from the host, or from another image" {
	# a kernel on the host, relative to the configuration file
	oci-fetch -q --insecure "$REG/demo:1" | oci-unpack -q | kextract -q -g spare > /dev/null
	mkdir -p conf/k
	mv kernel/spare/Image kernel/spare/initrd conf/k/
	rm -rf kernel
	config 1 1
	sed 's|^  hypervisor: apple|  hypervisor: apple\n  kernel_file: k/Image\n  initrd_file: k/initrd|' slicer-mac.yaml > conf/c.yaml
	rm slicer-mac.yaml
	run_split vmstrap up -c conf/c.yaml
	assert_ok
	[ ! -e kernel ] || fail "a kernel was extracted: $(ls -R kernel)"
	pid=$(jq -r .pid <<< "$output")
	[[ "$(tr '\0' ' ' < "/proc/$pid/cmdline")" == *"-kernel $T/conf/k/Image -initrd $T/conf/k/initrd "* ]]
	wait_console web-1 "vmstrap-guest: up web-1 boot 1" 60
	vmstrap -q down
	# the kernel of another image, pulled as well
	config 1 1
	sed -i "s|^  hypervisor: apple|  hypervisor: apple\n  kernel_image: \"$REG/demo:2\"|" slicer-mac.yaml
	run_split vmstrap up
	assert_ok
	two=$(jq -r '.manifests[] | select(.annotations."org.opencontainers.image.ref.name" == "'"$REG/demo:2"'") | .digest' oci-cache/index.json)
	[ -n "$two" ] || fail "demo:2 was not pulled: $(cat oci-cache/index.json)"
	[ "$(jq -r .source kernel/web/.Image.json)" = "$two" ]
	[ "$(jq -r .source .web-base.img.json)" != "$two" ]
	wait_console web-1 "vmstrap-guest: up web-1 boot 2" 60
	vmstrap -q down
}
