#!/usr/bin/env bats
# vmstrap snapshot and launch --from, end to end: the test guest (with sshd)
# served by a real docker-registry, VMs booted by QEMU under TCG, workspaces
# on a loop-mounted reflink XFS (live snapshots by reflink) and on ext4 (by
# copy): live snapshots while the guest writes, the pause and its watchdog,
# kill -9 at the worst moment, restore, forks, ls and rm.

load helpers

setup_file() {
	local L=$BATS_FILE_TMPDIR/layout
	"$VS_TOP/scripts/mkguest-image" -m stay -s amd64 "$L" one > /dev/null || return 1
	ssh-keygen -q -t ed25519 -N '' -C snapshot@test -f "$BATS_FILE_TMPDIR/key"
	start_registry "$BATS_FILE_TMPDIR/registry"
	push "$L:one" demo:1
}

teardown_file() {
	kill "$REG_PID" 2>/dev/null || true
}

setup() {
	export VMRUN_ACCEL=tcg
}

teardown() {
	kill_vms
	[ -z "${W:-}" ] || (cd "$W" && vmrun ls 2>/dev/null | jq -r 'select(.state == "running") | .pid' | xargs -r kill -9) || true
	cd "$T"
	unmount_all
}

# workspace xfs|ext4: a workspace in $W on a loop-mounted reflink XFS, or
# on the ext4 the tests run on; slicer-mac.yaml with group web (count 1).
workspace() {
	if [ "$1" = xfs ]; then
		mount_loop xfs 12G "$T/x" -m reflink=1
		W=$T/x
	else
		[ "$(stat -f -c %T "$T")" = ext2/ext3 ] || skip "the test directory is on $(stat -f -c %T "$T"), not ext4"
		W=$T
	fi
	cd "$W"
	cat > slicer-mac.yaml <<-EOF
	config:
	  image: "$REG/demo:1"
	  insecure_registry: true
	  ssh_keys: ["$(cat "$BATS_FILE_TMPDIR/key.pub")"]
	  host_groups:
	    - name: web
	      count: 1
	      vcpu: 1
	      ram_gb: 1
	      storage_size: 5G
	EOF
}

# on NAME CMD: run CMD in VM NAME over ssh.
on() {
	local n=$1
	shift
	vmstrap ssh -i "$BATS_FILE_TMPDIR/key" "$n" "$@"
}

# wait_vm NAME BOOT: until VM NAME (in $W) is up from boot BOOT and answers ssh.
wait_vm() {
	local i
	for ((i = 0; i < 600; i++)); do
		grep -q "vmstrap-guest: up $1 boot $2" "$W/run/$1/console.log" 2>/dev/null && break
		sleep 0.1
	done
	grep -q "vmstrap-guest: up $1 boot $2" "$W/run/$1/console.log" ||
		fail "$1 did not come up (boot $2): $(tail -5 "$W/run/$1/console.log")"
	for ((i = 0; i < 50; i++)); do
		on "$1" true 2>/dev/null && return 0
		sleep 0.2
	done
	fail "no ssh into $1"
}

# pattern IMG: /root/pattern in the disk image IMG, as the guest would see
# it: read from a reflink copy whose journal e2fsck has replayed (a disk the
# guest was writing to when it powered off may hold it there only).
pattern() {
	cp --reflink=always "$1" pattern.fsck
	e2fsck -p pattern.fsck > /dev/null 2>&1 || true
	debugfs -R 'cat /root/pattern' pattern.fsck 2>/dev/null
	rm -f pattern.fsck
}

# wait_clone NAME TAG: until the clone of a live snapshot NAME@TAG is made
# (its temporary file holds data), and a moment more: the guest is paused.
wait_clone() {
	for _ in $(seq 200); do
		[ -n "$(find "snapshots/$1" -name ".$2.img.tmp-*" -size +0 2>/dev/null)" ] && break
		sleep 0.05
	done
	sleep 0.3
}

# held_save NAME TAG: vmstrap snapshot save NAME TAG in the background,
# in a session of its own, held at its worst moment (the guest paused,
# the clone made) for 20 s; returns once it is there.
held_save() {
	VMSTRAP_TEST_HOLD_MS=20000 setsid vmstrap -q snapshot save "$1" "$2" > /dev/null 2>&1 < /dev/null &
	wait_clone "$1" "$2"
}

# kill_save: kill -9 the snapshotting command, vmstrap and the cowclone it
# runs; not the watchdog (a fork of cowclone's, with the same command
# line, but its own name).
kill_save() {
	local p
	pkill -9 -f 'vmstrap -q snapshot save' || true
	for p in $(pgrep -f 'cowclone -q --live'); do
		[ "$(cat "/proc/$p/comm" 2>/dev/null)" = qmp-watchdog ] || kill -9 "$p" 2>/dev/null || true
	done
}

# ticker NAME: the guest prints a tick with its uptime on its console every
# 50 ms, from now on: a guest that runs shows it.
ticker() {
	on "$1" "setsid sh -c 'while :; do echo \"tick \$(cut -d\" \" -f1 /proc/uptime)\" > /dev/console; sleep 0.05; done' < /dev/null > /dev/null 2>&1 &"
}

# ticks NAME: how many ticks its console holds.
ticks() {
	grep -ac '^tick ' "$W/run/$1/console.log" || true
}

# ticking NAME: the guest ticks again within 3 seconds.
ticking() {
	local a b i
	a=$(ticks "$1")
	for ((i = 0; i < 30; i++)); do
		sleep 0.1
		b=$(ticks "$1")
		[ "$b" -gt "$a" ] && return 0
	done
	fail "$1's guest is not running: no tick in 3 s"
}

# still NAME: the guest does not tick for half a second (paused).
still() {
	local a
	a=$(ticks "$1")
	sleep 0.5
	[ "$(ticks "$1")" = "$a" ] || fail "$1's guest ticks: it is not paused"
}

@test "live snapshot on reflink XFS while the guest writes: paused briefly, crash-consistent; restore brings it back, keeping the replaced disk" {
	workspace xfs
	vmstrap -q up > /dev/null
	wait_vm web-1 1
	on web-1 'echo first > /root/pattern && sync'
	# the guest busy writing, and ticking, through the snapshot
	on web-1 "setsid sh -c 'while [ ! -e /root/stop ]; do dd if=/dev/urandom of=/root/churn bs=64k count=32 2>/dev/null; done' < /dev/null > /dev/null 2>&1 &"
	ticker web-1
	ticking web-1
	run_split vmstrap snapshot save web-1 one
	assert_ok
	assert_one_line
	[[ $stderr == *"web-1@one: reflink clone, VM running, guest paused "*" ms"* ]] || fail "$stderr"
	[ "$(jq -r .method <<< "$output")" = reflink ]
	[ "$(jq -r .state <<< "$output")" = running ]
	[ "$(jq -r .name <<< "$output")@$(jq -r .tag <<< "$output")" = web-1@one ]
	ms=$(jq -r .paused_ms <<< "$output")
	[ "$(jq -n "$ms < 50")" = true ] || fail "paused $ms ms: more than 50"
	[ "$(jq -n "$ms > 0")" = true ] || fail "paused_ms $ms"
	[ "$(jq -r .base <<< "$output")" = "$W/web-base.img" ]
	[ "$(jq -r .base_source <<< "$output")" = "$(jq -r .source .web-base.img.json)" ]
	[ -f snapshots/web-1/one.img ] && [ -f snapshots/web-1/one.json ]
	[ "$(jq -c 'del(.path)' snapshots/web-1/one.json)" = "$(jq -c 'del(.path)' <<< "$output")" ]
	assert_no_temp snapshots/web-1
	# resumed: it ticks and answers
	ticking web-1
	[ "$(vmrun ls | jq -r 'select(.name == "web-1") | .paused')" = false ]
	on web-1 'echo second > /root/pattern && touch /root/stop && sync'
	# the running guest saw no I/O error
	run_split on web-1 'dmesg | grep -iE "I/O error|EXT4-fs (error|warning)|blk_update_request|Buffer I/O" || true'
	assert_ok
	[ -z "$output" ] || fail "the guest saw: $output"
	# crash-consistent: e2fsck -fy on a copy finds at most a journal to
	# recover, and the snapshot holds the first pattern
	cp --reflink=always snapshots/web-1/one.img copy.fsck
	run_split e2fsck -fy copy.fsck
	[ "$status" -le 1 ] || fail "e2fsck -fy: status $status: $output"
	# (what a crash leaves: the journal to replay, orphans, and the
	# superblock's free counts, which ext4 keeps up to date lazily)
	bad=$(awk '/\? yes/ && prev !~ /^(Free (blocks|inodes) count wrong|.*[Oo]rphan|.*journal)/ { print prev } NF { prev = $0 }' <<< "$output")
	[ -z "$bad" ] || fail "e2fsck fixed more than a crash leaves: $bad: $output"
	[ "$(debugfs -R 'cat /root/pattern' copy.fsck 2>/dev/null)" = first ]
	rm copy.fsck
	# restore: refused while the VM runs
	run_split vmstrap snapshot restore web-1 one
	assert_refused 75 "VM web-1 is running: stop it before restoring"
	vmstrap -q down web-1
	disk=$(stat -c %i web-1.img)
	run_split vmstrap snapshot restore web-1 one
	assert_ok
	kept=$(jq -r .kept <<< "$output")
	[[ $kept == pre-restore-20* ]] || fail "kept: $kept"
	[[ $stderr == *"kept as web-1@$kept"* ]]
	# the replaced disk is the snapshot now (renamed: the same file)
	[ "$(stat -c %i "snapshots/web-1/$kept.img")" = "$disk" ]
	[ "$(jq -r .state "snapshots/web-1/$kept.json")" = stopped ]
	[ "$(pattern "snapshots/web-1/$kept.img")" = second ]
	# it boots, with the first pattern, and its pinned host key
	vmstrap -q up > /dev/null
	wait_vm web-1 2
	run_split on web-1 cat /root/pattern
	assert_ok
	[ "$output" = first ]
	vmstrap -q down web-1
	# --discard: the disk replaced is not kept
	n=$(ls snapshots/web-1/*.img | wc -l)
	run_split vmstrap snapshot restore --discard web-1 "$kept"
	assert_ok
	[ "$(jq -r .kept <<< "$output")" = null ]
	[ "$(ls snapshots/web-1/*.img | wc -l)" = "$n" ]
	[ "$(pattern web-1.img)" = second ]
	# ls: one line per snapshot, the space truth; -j a table on stderr
	run_split vmstrap snapshot ls web-1
	assert_ok
	[ "$(wc -l <<< "$output")" = 2 ]
	for k in name tag created size allocated shared unique state method; do
		[ "$(jq -r "has(\"$k\")" <<< "$output" | sort -u)" = true ] || fail "no $k: $output"
	done
	[ "$(jq -r 'select(.tag == "one") | .size' <<< "$output")" = 5368709120 ]
	# the snapshot shares blocks with the base and the disks
	[ "$(jq -r 'select(.tag == "one") | .shared > 0' <<< "$output")" = true ]
	[ "$(jq -r 'select(.tag == "one") | .shared + .unique == .allocated' <<< "$output")" = true ]
	run_split vmstrap snapshot ls -j
	assert_ok
	[[ $stderr == *allocated*unique* ]] && [[ $stderr == *"web-1"*"one"* ]]
	[ "$(wc -l <<< "$output")" = 2 ]
	# df counts the snapshots too
	run_split vmstrap df
	assert_ok
	jq -e '.check.images[] | select(.path | endswith("snapshots/web-1/one.img"))' <<< "$output" > /dev/null
}

@test "kill -9 while the guest is paused: the watchdog resumes it at once, no half snapshot; without the watchdog, vmrun resume; SIGTERM resumes it too" {
	workspace xfs
	vmstrap -q up > /dev/null
	wait_vm web-1 1
	ticker web-1
	ticking web-1
	# the worst moment made long: the clone made, the guest paused
	held_save web-1 k
	still web-1
	# kill -9 of the whole command, vmstrap and cowclone
	kill_save
	t0=$(date +%s%N)
	ticking web-1
	t=$((($(date +%s%N) - t0) / 1000000))
	[ "$t" -lt 2000 ] || fail "resumed after $t ms"
	[ "$(vmrun ls | jq -r 'select(.name == "web-1") | .paused')" = false ]
	[ ! -e snapshots/web-1/k.img ] && [ ! -e snapshots/web-1/k.json ]
	assert_no_temp snapshots/web-1
	! pgrep -r D,R,S qmp-watchdog > /dev/null || fail "a watchdog is left"
	# the watchdog killed first: the guest stays paused until vmrun resume
	held_save web-1 k
	pkill -9 -r D,R,S qmp-watchdog
	kill_save
	still web-1
	[ "$(vmrun ls | jq -r 'select(.name == "web-1") | .paused')" = true ]
	[ ! -e snapshots/web-1/k.img ]
	run_split vmrun resume web-1
	assert_ok
	[[ $stderr == *"web-1 resumed (its guest was paused)"* ]]
	ticking web-1
	run_split vmrun resume web-1
	assert_ok
	[[ $stderr == *"not paused"* ]]
	rm -f snapshots/web-1/.k.img.tmp-*
	# SIGTERM or SIGINT during the pause: resumed, the temporary file
	# removed (the signals' default actions: a background job of a script
	# has SIGINT ignored)
	for sig in TERM INT; do
		VMSTRAP_TEST_HOLD_MS=20000 env --default-signal=INT,TERM \
			cowclone -q --live web-1.img snapshots/web-1/t.img > /dev/null 2> "$T/err" &
		pid=$!
		wait_clone web-1 t
		still web-1
		kill -s "$sig" "$pid"
		st=0
		wait "$pid" || st=$?
		[ "$st" = $((128 + $(kill -l "$sig"))) ] || fail "SIG$sig: status $st: $(cat "$T/err")"
		ticking web-1
		assert_no_temp snapshots/web-1
		[ ! -e snapshots/web-1/t.img ]
	done
	# a clone that fails (a full filesystem): the guest resumed, nothing left
	mount_loop ext4 16M "$T/small"
	run_split cowclone -q --live --pause-ok web-1.img "$T/small/x.img"
	assert_refused 74 "No space left on device"
	assert_one_line
	ticking web-1
	[ "$(vmrun ls | jq -r 'select(.name == "web-1") | .paused')" = false ]
	[ ! -e "$T/small/x.img" ]
	assert_no_temp "$T/small"
	# and the VM still snapshots
	run_split vmstrap snapshot save web-1
	assert_ok
	[[ $(jq -r .tag <<< "$output") == 20*Z ]]
	vmstrap -q down
}

@test "on ext4: a live snapshot is a copy, refused without --pause-ok, saying how long it would pause; a stopped VM's is a sparse copy" {
	workspace ext4
	vmstrap -q up > /dev/null
	wait_vm web-1 1
	ticker web-1
	run_split vmstrap snapshot save web-1 live
	assert_refused 75 "a live clone would be a copy of [0-9.]+[KMG], pausing VM web-1 for about [0-9]+ s; give --pause-ok"
	assert_one_line
	[ ! -e snapshots/web-1/live.img ] && [ ! -e snapshots/web-1/live.json ]
	assert_no_temp snapshots/web-1
	ticking web-1
	run_split vmstrap snapshot save --pause-ok web-1 live
	assert_ok
	[ "$(jq -r .method <<< "$output")" = sparse-copy ]
	[ "$(jq -r .state <<< "$output")" = running ]
	[ "$(jq -r '.paused_ms > 0' <<< "$output")" = true ]
	[[ $stderr == *"sparse-copy (no reflinks here)"* ]]
	ticking web-1
	vmstrap -q down
	run_split vmstrap snapshot save web-1 cold
	assert_ok
	[ "$(jq -r .method <<< "$output")" = sparse-copy ]
	[ "$(jq -r .state <<< "$output")" = stopped ]
	[ "$(jq -r .paused_ms <<< "$output")" = null ]
	# a sparse copy: no more blocks than the disk
	[ "$(stat -c %b snapshots/web-1/cold.img)" -le "$(stat -c %b web-1.img)" ]
	[ "$(imgsum -b snapshots/web-1/cold.img)" = "$(imgsum -b web-1.img)" ]
	run_split vmstrap snapshot ls
	assert_ok
	[ "$(jq -r .unique <<< "$output" | sort -u | wc -l)" -ge 1 ]
	[ "$(jq -r 'select(.tag == "cold") | .shared' <<< "$output")" = 0 ]
	# restore on ext4: the replaced disk is renamed, not copied
	ino=$(stat -c %i web-1.img)
	run_split vmstrap snapshot restore web-1 live
	assert_ok
	[ "$(stat -c %i "snapshots/web-1/$(jq -r .kept <<< "$output").img")" = "$ino" ]
}

@test "launch --from: a fork with the snapshot's data and its own identity; the parent untouched; rm leaves the fork running" {
	workspace xfs
	vmstrap -q up > /dev/null
	wait_vm web-1 1
	on web-1 'echo from-web-1 > /root/pattern && sync'
	run_split on web-1 cat /etc/hostname /etc/machine-id
	parent=$output
	vmstrap -q snapshot save web-1 s1 > /dev/null
	sum=$(imgsum snapshots/web-1/s1.img)
	run_split vmstrap launch web --from web-1@s1
	assert_ok
	[ "$(jq -r .name <<< "$output")" = web-2 ]
	[ "$(jq -r .from <<< "$output")" = web-1@s1 ]
	[[ $stderr == *"web-2: disk reflink from web-1@s1, its own identity"* ]] || fail "$stderr"
	wait_vm web-2 2
	run_split on web-2 cat /root/pattern /etc/hostname /etc/machine-id
	assert_ok
	[ "$(sed -n 1p <<< "$output")" = from-web-1 ]
	[ "$(sed -n 2p <<< "$output")" = web-2 ]
	[ "$(sed -n 3p <<< "$output")" != "$(sed -n 2p <<< "$parent")" ]
	# its own host keys, pinned under its name
	[ "$(grep -c '^web-2 ' known_hosts)" = 3 ]
	[ -z "$(comm -12 <(grep '^web-1 ' known_hosts | cut -d' ' -f3 | sort) <(grep '^web-2 ' known_hosts | cut -d' ' -f3 | sort))" ] ||
		fail "web-2 has web-1's host keys"
	# the parent and the snapshot untouched
	run_split on web-1 cat /etc/hostname /etc/machine-id
	[ "$output" = "$parent" ]
	[ "$(imgsum snapshots/web-1/s1.img)" = "$sum" ]
	# rm of the snapshot a fork runs from: fine
	run_split vmstrap snapshot rm web-1 s1
	assert_ok
	[ ! -e snapshots/web-1/s1.img ] && [ ! -e snapshots/web-1/s1.json ] && [ ! -e snapshots ]
	run_split on web-2 cat /root/pattern
	assert_ok
	[ "$output" = from-web-1 ]
	vmstrap -q down
}

@test "bad names and tags, missing VMs and snapshots: clear errors, nothing made" {
	cd "$T"
	W=
	mkimage web-1.img 5G 2
	run_split vmstrap snapshot save ../x
	assert_refused 64 "invalid VM name '../x'"
	run_split vmstrap snapshot save web-1 ..
	assert_refused 64 "invalid snapshot tag name '..'"
	run_split vmstrap snapshot save web-1 a/b
	assert_refused 64 "invalid snapshot tag name 'a/b'"
	run_split vmstrap snapshot save web-1 ''
	assert_refused 64 "invalid snapshot tag name ''"
	run_split vmstrap snapshot rm web-1 ''
	assert_refused 64 "invalid snapshot tag name ''"
	run_split vmstrap snapshot save nosuch
	assert_refused 66 "no VM called nosuch here"
	run_split vmstrap snapshot save web-1 a b
	assert_refused 64 "snapshot save needs NAME \[TAG\]"
	run_split vmstrap snapshot save --frob web-1
	assert_refused 64 "unknown option '--frob'"
	run_split vmstrap snapshot frob
	assert_refused 64 "unknown 'frob'"
	run_split vmstrap snapshot
	assert_refused 64 "snapshot needs save, restore, ls or rm"
	[ ! -e snapshots ]
	run_split vmstrap snapshot rm web-1 nope
	assert_refused 66 "no snapshot web-1@nope"
	run_split vmstrap snapshot restore web-1 nope
	assert_refused 66 "no snapshot web-1@nope"
	run_split vmstrap snapshot ls nosuch
	assert_refused 66 "no VM called nosuch"
	run_split vmstrap launch web --from web-1
	assert_refused 64 "give NAME@TAG"
	run_split vmstrap launch web --from web-1@nope
	assert_refused 66 "no snapshot web-1@nope"
	run_split vmstrap launch web --from ../x@t
	assert_refused 64 "invalid VM name"
	# a disk no VM has run on yet: a plain clone, stopped
	run_split vmstrap snapshot ls
	assert_ok
	[ -z "$output" ]
	run_split vmstrap snapshot save web-1 t1
	assert_ok
	[ "$(jq -r .state <<< "$output")" = stopped ]
	run_split vmstrap snapshot save web-1 t1
	assert_refused 73 "snapshot web-1@t1 already exists"
	run_split vmstrap snapshot ls web-1
	assert_ok
	[ "$(jq -r .tag <<< "$output")" = t1 ]
	run_split vmstrap snapshot rm web-1 t1
	assert_ok
	[[ $stderr == *"snapshot web-1@t1 removed"* ]]
	[ ! -e snapshots ]
	run_split vmstrap snapshot -h
	assert_ok
	[[ $output == *"snapshot save [--pause-ok] NAME [TAG]"* ]]
}
