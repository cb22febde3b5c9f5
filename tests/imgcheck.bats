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
	unmount_all
}

# img NAME: a copy of the guest's base.
img() {
	cp --sparse=always "$G/base.img" "$T/$1"
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
	run_split imgcheck -q k.img
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
