#!/usr/bin/env bats
# imgcheck: real ext4 images (mkbase of the test guest's tree), corrupted
# with debugfs -w, checked and repaired by the real e2fsck; a VM under QEMU
# holding one; space on a loop-mounted reflink XFS and on ext4.

load helpers

setup_file() {
	local g=$BATS_FILE_TMPDIR/guest
	"$VS_TOP/scripts/mkguest" amd64 "$g" > /dev/null || return 1
	"$VS_BIN/mkbase" -q -s 5G -o "$g/base.img" "$g/rootfs" > /dev/null || return 1
	export G=$g
}

setup() {
	cd "$T"
	export VMRUN_ACCEL=tcg
}

teardown() {
	kill_vms
	[ ! -d "$T/x/run" ] || (cd "$T/x" && vmrun ls 2>/dev/null | jq -r 'select(.state == "running") | .pid' | xargs -r kill -9) || true
	cd "$T"
	sleep 0.2
	unmount_all
}

# img NAME: a copy of the guest's base.
img() {
	cp --sparse=always "$G/base.img" "$T/$1"
}

# files IMG: each file scripts/mkimage put in IMG with a digest of its
# content, read by debugfs: "every other file unchanged".
files() {
	local f
	for f in /etc/hostname /etc/numbers.txt /text/numbers \
		$(debugfs -R 'ls -p /data' "$1" 2>/dev/null | awk -F/ '$6 ~ /^blob/ {print "/data/" $6}'); do
		printf '%s %s\n' "$f" "$(debugfs -R "cat $f" "$1" 2>/dev/null | sha256sum | cut -d' ' -f1)"
	done
}

# put IMG FILE NAME: FILE written into IMG's filesystem as /NAME (debugfs).
put() {
	debugfs -w -R "write $2 $3" "$1" > /dev/null 2>&1 || fail "debugfs could not write $3 into $1"
	[ "$(debugfs -R "stat /$3" "$1" 2>/dev/null | sed -n 's/.*Size: \([0-9]*\).*/\1/p' | head -1)" = "$(stat -c %s "$2")" ] ||
		fail "$3 is not whole in $1"
}

@test "-h, -V, bad options" {
	run_split imgcheck -h
	assert_ok
	[[ $output == usage:* ]]
	run_split imgcheck -V
	assert_ok
	run_split imgcheck -x a.img
	assert_refused 64 "unknown option"
	run_split imgcheck -n -y a.img
	assert_refused 64 "exclude each other"
	run_split imgcheck < /dev/null
	assert_refused 64 "no image"
	run_split imgcheck <<< '{"image": {}}'
	assert_refused 65 "no disk.path or base.path"
}

@test "a clean image: state clean, exit 0, the check section" {
	img c.img
	run_split imgcheck c.img
	assert_ok
	[ "$(jq -r '.check.images[0].state' <<< "$output")" = clean ]
	[ "$(jq -r '.check.images[0].e2fsck_status' <<< "$output")" = 0 ]
	[ "$(jq -r '.check.images[0].path' <<< "$output")" = "$T/c.img" ]
	[ "$(jq -r '.check.images[0].logical' <<< "$output")" = 5368709120 ]
	[[ $(jq -r '.check.images[0].summary' <<< "$output") == *" files ("*" blocks" ]]
	[ "$(jq -r '.check.images[0].seconds >= 0' <<< "$output")" = true ]
	# milliseconds, written as such: no float noise (0.58999999999999997)
	[[ $output =~ \"seconds\":[0-9]+(\.[0-9]{1,3})?[,}] ]] || fail "seconds: $output"
	# from the pipeline document, disk first, else base
	jq -n --arg d "$T/c.img" '{disk: {path: $d}, other: 1}' > doc
	run_split imgcheck < doc
	assert_ok
	[ "$(jq -r '.other' <<< "$output")" = 1 ]
	[ "$(jq -r '.check.images[0].path' <<< "$output")" = "$T/c.img" ]
	jq -n --arg d "$T/c.img" '{base: {path: $d}}' | imgcheck -q > out
	[ "$(jq -r '.check.images[0].state' out)" = clean ]
}

@test "a corrupted image: -n finds it uncorrected (4) and changes nothing; -p repairs; then clean" {
	img bad.img
	# a wrong link count and a cleared inode bitmap bit
	debugfs -w -R 'sif /etc/hostname links_count 5' bad.img
	debugfs -w -R 'freei /sbin/init' bad.img
	sum=$(imgsum bad.img)
	run_split imgcheck -q bad.img
	[ "$status" -eq 4 ] || fail "status $status: $stderr"
	[ "$(jq -r '.check.images[0].state' <<< "$output")" = uncorrected ]
	[ "$(jq -r '.check.images[0].e2fsck_status' <<< "$output")" = 4 ]
	[ "$(imgsum bad.img)" = "$sum" ] || fail "-n changed the image"
	run_split imgcheck -q -p bad.img
	[ "$status" -eq 1 ] || fail "status $status: $stderr"
	[ "$(jq -r '.check.images[0].state' <<< "$output")" = corrected ]
	run_split imgcheck -q bad.img
	assert_ok
	[ "$(jq -r '.check.images[0].state' <<< "$output")" = clean ]
}

@test "a damaged directory block: -p cannot, -y can; statuses OR-ed over images" {
	img dir.img
	img ok.img
	debugfs -w -R 'zap_block -f /etc 0' dir.img
	run_split imgcheck -q -p dir.img ok.img
	[ "$status" -eq 4 ] || fail "status $status: $stderr"
	[ "$(jq -r '.check.images[0].state' <<< "$output")" = uncorrected ]
	[ "$(jq -r '.check.images[1].state' <<< "$output")" = clean ]
	run_split imgcheck -q -y dir.img ok.img
	[ "$status" -eq 1 ] || fail "status $status: $stderr"
	[ "$(jq -r '.check.images[0].state' <<< "$output")" = corrected ]
	run_split imgcheck -q dir.img ok.img
	assert_ok
	e2fsck -fn dir.img > /dev/null
}

@test "a running VM's disk: repair refused (in-use, naming the VM); a check warns" {
	img vm-1.img
	run_split vmrun -d --mem 512M --kernel "$G/vmlinuz" --initrd "$G/initrd.img" --disk vm-1.img -a vmstrap.mode=stay
	assert_ok
	img other.img
	run_split imgcheck -q -y vm-1.img other.img
	[ "$status" -eq 75 ] || fail "status $status: $stderr"
	[[ $stderr == *"vm-1.img is in use by VM vm-1 (QEMU pid "*"): not repairing it"* ]]
	# the report says which was left alone; the others are checked
	[ "$(jq -r '.check.images[0].state' <<< "$output")" = in-use ]
	[ "$(jq -r '.check.images[0].e2fsck_status' <<< "$output")" = null ]
	[ "$(jq -r '.check.images[1].state' <<< "$output")" = clean ]
	run_split imgcheck -p vm-1.img
	[ "$status" -eq 75 ]
	[[ $stderr == *"in use by VM vm-1"* ]]
	# outside the workspace: QEMU's own lock still tells
	run_split imgcheck -C / -q -y "$T/vm-1.img"
	[ "$status" -eq 75 ]
	[[ $stderr == *"in use by another program"* ]]
	run_split imgcheck vm-1.img
	[[ $stderr == *"in use by VM vm-1 (QEMU pid "*"may report stale errors"* ]]
	vmrun -q stop -t 10 vm-1
	run_split imgcheck -q -p vm-1.img
	[ "$status" -le 1 ] || fail "status $status: $stderr"
}

@test "a writer that holds the image with flock(2), not QEMU's fcntl locks, is seen too" {
	img f.img
	# (flock holds the lock while its command runs; -o: flock, not the
	# command, so that killing flock releases it)
	flock -o -x f.img sleep 30 &
	pid=$!
	for ((i = 0; i < 100; i++)); do
		flock -n -s f.img true 2>/dev/null || break
		sleep 0.02
	done
	run_split imgcheck -q -y f.img
	[ "$status" -eq 75 ] || fail "status $status: $stderr"
	[[ $stderr == *"f.img is in use by another program"* ]]
	[ "$(jq -r '.check.images[0].state' <<< "$output")" = in-use ]
	run_split imgcheck f.img
	assert_ok
	[[ $stderr == *"in use by another program"*"may report stale errors"* ]]
	kill "$pid"
	wait "$pid" || true
	run_split imgcheck -q -y f.img
	assert_ok
	# and a repair holds the image against flock(2) writers meanwhile
	mkdir slow
	printf '#!/bin/sh\nsleep 3\nexec %s "$@"\n' "$(command -v e2fsck)" > slow/e2fsck
	chmod +x slow/e2fsck
	PATH=$T/slow:$PATH imgcheck -q -y f.img > out 2> err 8>&- &
	pid=$!
	sleep 1
	run flock -n -x f.img true
	[ "$status" -ne 0 ] || fail "a writer took f.img while it was repaired"
	wait "$pid"
	[ "$(jq -r '.check.images[0].state' out)" = clean ]
}

@test "bad images: missing, not ext, a directory, unreadable; nothing on stdout" {
	run_split imgcheck none.img
	assert_refused 66 "none.img: No such file"
	head -c 1M /dev/urandom > junk.img
	run_split imgcheck junk.img
	assert_refused 65 "junk.img is not an ext2/ext3/ext4 filesystem image"
	mkdir d.img
	run_split imgcheck d.img
	assert_refused 65 "d.img is a directory"
	need_root "changing user"
	R=$(mktemp -d /tmp/vmstrap-rootless.XXXXXX)
	chmod 755 "$R"
	cp --sparse=always "$G/base.img" "$R/secret.img"
	chmod 600 "$R/secret.img"
	run_split runuser -u nobody -- "$VS_BIN/imgcheck" "$R/secret.img"
	rm -rf "$R"
	assert_refused 77 "secret.img: Permission denied"
}

@test "space on a reflink XFS: a clone shares nearly all; 100 MB written is 100 MB unique; set total counts once" {
	mount_loop xfs 20G "$T/x" -m reflink=1
	mkdir -p tree
	cp -a "$G/rootfs/." tree/
	head -c 300M /dev/urandom > tree/data
	mkbase -q -s 15G -o "$T/x/slicer-base.img" tree > /dev/null
	cowclone -q "$T/x/slicer-base.img" "$T/x/slicer-1.img" > clone.json
	[ "$(jq -r .disk.method clone.json)" = reflink ]
	run_split imgcheck -u -j "$T/x/slicer-1.img"
	assert_ok
	alloc=$(jq '.check.images[0].allocated' <<< "$output")
	shared=$(jq '.check.images[0].shared' <<< "$output")
	[ "$alloc" -gt $((300 << 20)) ]
	[ "$shared" -ge $((alloc * 95 / 100)) ] || fail "shared $shared of $alloc"
	[ "$(jq '.check.images[0].state' <<< "$output")" = null ]
	# 100 MB of new data into the clone, where the base has none
	dd if=/dev/urandom of="$T/x/slicer-1.img" bs=1M count=100 seek=8000 conv=notrunc status=none
	run_split imgcheck -u -j "$T/x/slicer-base.img" "$T/x/slicer-1.img"
	assert_ok
	unique=$(jq '.check.images[1].unique' <<< "$output")
	[ "$unique" -ge $((100 << 20)) ] && [ "$unique" -le $((104 << 20)) ] || fail "unique $unique"
	du=$(jq '.check.total.allocated' <<< "$output")
	real=$(jq '.check.total.real' <<< "$output")
	base=$(jq '.check.images[0].allocated' <<< "$output")
	# du counts the shared data twice; the real total once
	[ "$du" -ge $((2 * base)) ]
	[ "$real" -ge "$base" ] && [ "$real" -le $((base + (104 << 20))) ] || fail "real $real base $base"
	[[ $stderr == *"as du counts it"* ]]
	[[ $stderr != *"no extent is shared"* && $stderr != *"no reflinks"* ]]
}

@test "space on ext4: everything unique, and said so" {
	img a.img
	cowclone -q a.img b.img > /dev/null
	run_split imgcheck -u -j a.img b.img
	assert_ok
	[ "$(jq '.check.images[1].shared' <<< "$output")" = 0 ]
	[ "$(jq '.check.images[1].unique' <<< "$output")" -gt 0 ]
	[ "$(jq '.check.total.real' <<< "$output")" = "$(jq '[.check.images[].unique] | add' <<< "$output")" ]
	[[ $stderr == *"no reflinks on this filesystem"* ]]
	[ "$(jq '.check.total.real' <<< "$output")" = "$(jq '.check.total.allocated' <<< "$output")" ]
}

@test "the check section's keys are the ones vmstrap(7) and imgcheck(1) document" {
	img k.img
	run_split imgcheck -q --trim --dedupe k.img
	assert_ok
	local code seven one
	code=$( (jq -r '.check | keys_unsorted | .[]' <<< "$output"; jq -r '.check.images[0] | keys_unsorted | .[]' <<< "$output") | sort)
	seven=$(awk '/^\.Ss check$/ {f=1; next} f && /^\.S[sh] / {f=0} f && /^\.It Li / {print $3}' "$VS_TOP/man/vmstrap.7" | sort)
	one=$(awk '/^section:$/ {f=1; next} f && /^\.Sh/ {f=0} f && /^\.It Li / {print $3}' "$VS_TOP/man/imgcheck.1" | sort)
	[ "$code" = "$seven" ] || fail "code: $code; vmstrap.7: $seven"
	[ "$code" = "$one" ] || fail "code: $code; imgcheck.1: $one"
}

@test "the lock is held while e2fsck repairs: a VM cannot start on the image meanwhile" {
	img w.img
	mkdir slow
	printf '#!/bin/sh\nsleep 4\nexec %s "$@"\n' "$(command -v e2fsck)" > slow/e2fsck
	chmod +x slow/e2fsck
	PATH=$T/slow:$PATH imgcheck -q -y w.img > out 2> err 8>&- &
	pid=$!
	sleep 1
	run_split vmrun -d --mem 512M --kernel "$G/vmlinuz" --initrd "$G/initrd.img" --disk w.img -a vmstrap.mode=stay
	assert_refused 75 "in use by another program"
	wait "$pid"
	[ "$(jq -r '.check.images[0].state' out)" = clean ]
}

@test "bad input changes nothing: the same file twice, a FIFO, a bad document, a bad -C" {
	img c.img
	debugfs -w -R 'sif /etc/hostname links_count 5' c.img
	sum=$(imgsum c.img)
	# one bad image among them: no image is repaired
	run_split imgcheck -q -y c.img missing.img
	assert_refused 66 "missing.img: No such file"
	[ "$(imgsum c.img)" = "$sum" ] || fail "c.img was repaired"
	ln -s c.img link.img
	ln c.img hard.img
	run_split imgcheck -q -y c.img link.img
	assert_refused 64 "c.img and $T/link.img are the same file"
	run_split imgcheck -q -y c.img hard.img
	assert_refused 64 "are the same file"
	[ "$(imgsum c.img)" = "$sum" ] || fail "c.img was repaired"
	mkfifo ff
	run_split timeout 10 imgcheck ff
	assert_refused 65 "ff is not a regular file"
	run_split timeout 10 imgcheck -u ff
	assert_refused 65 "ff is not a regular file"
	run_split imgcheck <<< '{"disk": {"path": 5}, "base": {"path": "'"$T/c.img"'"}}'
	assert_refused 65 "disk.path is not an absolute path"
	run_split imgcheck <<< '{"disk": {"path": "c.img"}}'
	assert_refused 65 "disk.path is not an absolute path"
	run_split imgcheck -C /nonexistent c.img
	assert_refused 66 "/nonexistent"
}

@test "a filesystem without extent maps still counts in the real total" {
	need_root "a tmpfs mount"
	mkdir tm
	mount -t tmpfs -o size=64M tmpfs tm
	echo "$T/tm" >> "$T/.mounts"
	truncate -s 5G tm/t.img
	mkfs.ext4 -q -F tm/t.img
	run_split imgcheck -u -j tm/t.img
	assert_ok
	alloc=$(jq '.check.images[0].allocated' <<< "$output")
	[ "$alloc" -gt 0 ]
	[ "$(jq '.check.total.real' <<< "$output")" = "$alloc" ]
	[[ $stderr == *"no reflinks on this filesystem"* ]]
}

@test "--trim: a 200 MB file written, then deleted: its blocks given back, e2fsck clean, every other file unchanged" {
	mkimage t.img 5G 30 5
	head -c 200M /dev/urandom > big
	put t.img big big
	sum=$(files t.img)
	debugfs -w -R "rm big" t.img > /dev/null 2>&1
	before=$(blocks t.img)
	run_split imgcheck --trim t.img
	assert_ok
	after=$(blocks t.img)
	[ $(( (before - after) * 512 )) -ge $((190 << 20)) ] || fail "given back: $(( (before - after) * 512 )) bytes"
	[ "$(jq -r '.check.images[0].trimmed' <<< "$output")" = $(( (before - after) * 512 )) ]
	[ "$(jq -r '.check.total.trimmed' <<< "$output")" = $(( (before - after) * 512 )) ]
	[ "$(jq -r '.check.total.given_back >= 190 * 1048576' <<< "$output")" = true ]
	[[ $stderr == *"trim: "*"given back by the holes punched"* ]]
	e2fsck -fn t.img > /dev/null
	[ "$(files t.img)" = "$sum" ]
	# again: nothing more to give back
	run_split imgcheck -q --trim t.img
	assert_ok
	[ "$(jq -r '.check.images[0].trimmed' <<< "$output")" = 0 ]
	# after e2fsck -p, in one command
	run_split imgcheck -q -p --trim t.img
	assert_ok
	[ "$(jq -r '.check.images[0].state' <<< "$output")" = clean ]
}

@test "--trim refuses a disk a VM runs on (75) and a filesystem not cleanly unmounted (65), changing nothing" {
	img vm-1.img
	run_split vmrun -d --mem 512M --kernel "$G/vmlinuz" --initrd "$G/initrd.img" --disk vm-1.img -a vmstrap.mode=stay
	assert_ok
	# (the report says which was left alone, as a repair's does)
	run_split imgcheck --trim vm-1.img
	[ "$status" -eq 75 ] || fail "status $status: $stderr"
	[[ $stderr == *"vm-1.img is in use by VM vm-1 (QEMU pid "*"): not trimming it"* ]]
	[ "$(jq -r '.check.images[0].state' <<< "$output")" = in-use ]
	[ "$(jq -r '.check.images[0].trimmed' <<< "$output")" = 0 ]
	vmrun -q stop -t 10 vm-1
	img u.img
	debugfs -w -R "ssv state 0" u.img > /dev/null 2>&1
	sum=$(imgsum u.img)
	run_split imgcheck --trim u.img
	assert_refused 65 "u.img was not cleanly unmounted .*imgcheck -p"
	assert_one_line
	[ "$(imgsum u.img)" = "$sum" ]
}

@test "--dedupe on a reflink XFS: the same 200 MB in two clones at other places shared again; contents unchanged, e2fsck clean" {
	mount_loop xfs 8G "$T/x" -m reflink=1
	cd "$T/x"
	mkimage base.img 5G 20
	cowclone -q base.img a.img > /dev/null
	cowclone -q base.img b.img > /dev/null
	head -c 200M /dev/urandom > "$T/big"
	head -c 7M /dev/urandom > "$T/small"
	put a.img "$T/big" big
	put b.img "$T/small" small
	put b.img "$T/big" big
	sa=$(files a.img) sb=$(files b.img)
	real=$(imgcheck -u -q base.img a.img b.img | jq .check.total.real)
	run_split imgcheck --dedupe base.img a.img b.img
	assert_ok
	after=$(jq .check.total.real <<< "$output")
	[ $((real - after)) -ge $((180 << 20)) ] || fail "real total $real -> $after"
	[ "$(jq .check.total.real_before <<< "$output")" = "$real" ]
	[ "$(jq -r '.check.total.deduped >= 180 * 1048576' <<< "$output")" = true ]
	[ "$(jq -r '.check.images[2].deduped >= 180 * 1048576' <<< "$output")" = true ]
	[[ $stderr == *"dedupe: "*"shared again"* ]]
	[[ $stderr == *"given back"* ]]
	[ "$(files a.img)" = "$sa" ] && [ "$(files b.img)" = "$sb" ]
	debugfs -R "cat /big" b.img 2>/dev/null | cmp - "$T/big"
	debugfs -R "cat /small" b.img 2>/dev/null | cmp - "$T/small"
	e2fsck -fn a.img > /dev/null && e2fsck -fn b.img > /dev/null
	# again: nothing more
	run_split imgcheck -q --dedupe base.img a.img b.img
	assert_ok
	[ "$(jq .check.total.deduped <<< "$output")" = 0 ]
	[ "$(jq .check.total.real <<< "$output")" = "$after" ]
	# with too little memory for the records: in parts, the same result
	rm b.img
	cowclone -q base.img b.img > /dev/null
	put b.img "$T/small" small
	put b.img "$T/big" big
	run_split env VMSTRAP_DEDUPE_MEMORY=1M imgcheck --dedupe base.img a.img b.img
	assert_ok
	[[ $stderr == *" parts)"* ]] || fail "not in parts: $stderr"
	[ "$(jq -r '.check.total.given_back >= 180 * 1048576' <<< "$output")" = true ]
	[ "$(files b.img)" = "$sb" ]
	run_split env VMSTRAP_DEDUPE_MEMORY=lots imgcheck --dedupe a.img b.img
	assert_refused 64 "VMSTRAP_DEDUPE_MEMORY: invalid size 'lots'"
	# images on two filesystems: refused
	cp --sparse=always b.img "$T/c.img"
	run_split imgcheck --dedupe a.img "$T/c.img"
	assert_refused 64 "on different filesystems"
}

@test "--dedupe under a running VM (TCG): the guest reads the same bytes, sees no error" {
	mount_loop xfs 8G "$T/x" -m reflink=1
	"$VS_TOP/scripts/mkguest" -m stay -s amd64 "$T/sg" > /dev/null
	cd "$T/x"
	mkbase -q -s 5G -o base.img "$T/sg/rootfs" > /dev/null
	cowclone -q base.img vm-1.img > /dev/null
	cowclone -q base.img other.img > /dev/null
	head -c 100M /dev/urandom > "$T/big"
	head -c 3M /dev/urandom > "$T/small"
	put vm-1.img "$T/big" big
	put other.img "$T/small" small
	put other.img "$T/big" big
	ssh-keygen -q -t ed25519 -N '' -f "$T/key"
	imgprep -q -k "$T/key.pub" --known-hosts "$T/known" vm-1.img > /dev/null
	run_split vmrun -d --mem 512M --kernel "$T/sg/vmlinuz" --initrd "$T/sg/initrd.img" --disk vm-1.img
	assert_ok
	port=$(jq -r .vm.ssh <<< "$output" | cut -d: -f2)
	for _ in $(seq 600); do
		grep -q "vmstrap-guest: up vm-1" run/vm-1/console.log 2>/dev/null && break
		sleep 0.1
	done
	grep -q "vmstrap-guest: up vm-1" run/vm-1/console.log || fail "vm-1 did not boot: $(tail -5 run/vm-1/console.log)"
	guest() {
		ssh -o BatchMode=yes -o ConnectTimeout=30 -o HostKeyAlias=vm-1 \
			-o UserKnownHostsFile="$T/known" -o StrictHostKeyChecking=yes \
			-i "$T/key" -p "$port" root@127.0.0.1 "$@"
	}
	for _ in $(seq 50); do guest true 2>/dev/null && break; sleep 0.2; done
	want=$(sha256sum < "$T/big" | cut -d' ' -f1)
	[ "$(guest 'sha256sum < /big' | cut -d' ' -f1)" = "$want" ]
	run_split imgcheck --dedupe vm-1.img other.img
	assert_ok
	[ "$(jq -r '.check.total.deduped >= 90 * 1048576' <<< "$output")" = true ]
	# read again from the disk, not the guest's cache
	[ "$(guest 'sync; echo 3 > /proc/sys/vm/drop_caches; sha256sum < /big' | cut -d' ' -f1)" = "$want" ]
	run_split guest 'dmesg | grep -iE "I/O error|EXT4-fs (error|warning)|blk_update_request" || true'
	assert_ok
	[ -z "$output" ] || fail "the guest saw: $output"
	vmrun -q stop -t 20 vm-1
	e2fsck -fn vm-1.img > /dev/null
}

@test "--dedupe on ext4: said so, nothing changed, exit 0" {
	mkimage a.img 5G 10
	cp --sparse=always a.img b.img
	sa=$(imgsum a.img) sb=$(imgsum b.img)
	run_split imgcheck --dedupe a.img b.img
	assert_ok
	[[ $stderr == *"cannot share blocks between files"*"nothing deduplicated"* ]]
	[ "$(jq .check.total.deduped <<< "$output")" = 0 ]
	[ "$(imgsum a.img)" = "$sa" ] && [ "$(imgsum b.img)" = "$sb" ]
}
