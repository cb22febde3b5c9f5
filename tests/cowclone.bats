#!/usr/bin/env bats
# cowclone: reflink on a real XFS, the sparse fallback on ext4, growing with
# resize2fs, and every way it refuses, checked from the outside.

load helpers

setup() {
	cd "$T"
}

teardown() {
	if [ -f "$T/qemu.pid" ]; then
		kill "$(cat "$T/qemu.pid")" 2>/dev/null || true
		wait 2>/dev/null || true
	fi
	unmount_all
}

# qemu_hold IMG: a real QEMU with IMG as its virtio disk, paused (-S), so it
# holds the image's locks as a running VM does; its QMP socket $T/qmp.sock.
qemu_hold() {
	command -v qemu-system-x86_64 >/dev/null || fail "qemu-system-x86_64 missing"
	qemu-system-x86_64 -accel tcg -display none -nodefaults -S \
		-qmp "unix:$T/qmp.sock,server=on,wait=off" \
		-drive "file=$1,format=raw,if=virtio" 2>"$T/qemu.err" &
	echo $! > "$T/qemu.pid"
	local ino
	ino=$(stat -c %i "$1")
	# QEMU takes its locks one after the other: wait for the one on
	# byte 101, the write permission, which is the last
	for _ in $(seq 100); do
		grep -qE ":$ino 10[01] 101\$" /proc/locks && return 0
		sleep 0.1
	done
	fail "QEMU did not lock $1: $(cat "$T/qemu.err")"
}

@test "-h prints the usage on stdout and exits 0" {
	run_split cowclone -h
	assert_success
	assert_output --partial "usage: cowclone [-fqV] [-s SIZE] [--no-sync] [--keep FILE]"
	assert_output --partial "[--live [--pause-ok] [--qmp SOCKET]] SRC DST"
	assert_output --partial "--no-sync"
	assert_output --partial "--force"
	[ -z "$stderr" ]
}

@test "-V prints the version" {
	run_split cowclone -V
	assert_success
	assert_output --regexp '^cowclone \(vmstrap\) [0-9]+\.[0-9]+\.[0-9]+$'
}

@test "an unknown option is a usage error" {
	run_split cowclone -x a b
	assert_refused 64 "^cowclone: unknown option '-x'"
	run_split cowclone --frobnicate a b
	assert_refused 64 "unknown option '--frobnicate'"
	run_split cowclone -s
	assert_refused 64 "option -s needs a value"
}

@test "missing and extra operands are usage errors" {
	run_split cowclone
	assert_refused 64 "missing operand"
	run_split cowclone a b c
	assert_refused 64 "too many operands"
}

@test "bad sizes are refused with the accepted form, before anything is written" {
	mkimage src.img 256M 0
	for s in 15 15GB 4G -1G 1.5G 99999999999T 0G "" 15K; do
		run_split cowclone -s "$s" src.img dst.img
		assert_refused 64 "size"
		assert_one_line
		case $s in
		4G) [[ $stderr == *"at least 5G"* ]] || fail "$s: $stderr" ;;
		99999999999T) [[ $stderr == *"too large"* ]] || fail "$s: $stderr" ;;
		*) [[ $stderr == *"like 15G"* ]] || fail "$s: $stderr" ;;
		esac
		[ ! -e dst.img ] || fail "dst.img created for -s '$s'"
	done
	assert_no_temp .
}

@test "a missing source is EX_NOINPUT and leaves nothing" {
	run_split cowclone nothere.img dst.img
	assert_refused 66 "^cowclone: nothere.img: No such file or directory$"
	[ ! -e dst.img ]
	assert_no_temp .
}

@test "a source that is not a regular file is refused" {
	mkdir adir
	run_split cowclone adir dst.img
	assert_refused 65 "adir: not a regular file"
	[ ! -e dst.img ]
}

@test "a destination in a missing directory is refused" {
	mkimage src.img 256M 0
	run_split cowclone src.img no/such/dst.img
	assert_refused 73 "no/such: No such file or directory"
}

@test "the source itself is never the destination, even with -f" {
	mkimage slicer-base.img 256M 1
	ino=$(stat -c %i slicer-base.img)
	sum=$(imgsum slicer-base.img)
	run_split cowclone -f slicer-base.img slicer-base.img
	assert_refused 64 "slicer-base.img is the source itself"
	run_split cowclone -f -s 6G slicer-base.img ./slicer-base.img
	assert_refused 64 "is the source itself"
	run_split cowclone -f slicer-base <<< "{\"base\":{\"path\":\"$T/slicer-base.img\"}}"
	assert_refused 64 "is the source itself"
	[ "$(stat -c %i slicer-base.img)" = "$ino" ]
	[ "$(imgsum slicer-base.img)" = "$sum" ]
	assert_no_temp .
}

@test "a FIFO as the source is refused at once" {
	mkfifo ff
	run_split timeout 10 cowclone ff disk.img
	assert_refused 65 "ff: not a regular file"
	[ ! -e disk.img ]
}

@test "a destination ending in '/' is refused" {
	mkimage src.img 256M 0
	run_split cowclone src.img newdir/
	assert_refused 73 "newdir/: ends with '/'"
	[ ! -e newdir ]
}

@test "paths that JSON cannot carry are refused before any work" {
	mkdir w && cd w
	mkimage src.img 256M 0
	run_split cowclone src.img $'bad\xff.img'
	assert_refused 64 "not valid UTF-8"
	left=$(ls -A | grep -v '^src.img$' || true)
	[ -z "$left" ] || fail "left: $left"
}

@test "a path with a newline gives a one-line message" {
	run_split cowclone $'no\nsuch.img' disk.img
	assert_refused 66 'no\\nsuch.img: No such file'
	assert_one_line
}

@test "-s larger than the filesystem allows fails before copying" {
	ext4_dir "$T/e"
	mkimage "$T/e/src.img" 1G 1
	run_split cowclone -s 17T "$T/e/src.img" "$T/e/disk.img"
	assert_refused 74 "disk.img: cannot be 17T: File too large"
	[ ! -e "$T/e/disk.img" ]
	assert_no_temp "$T/e"
}

@test "fallback on ext4: sparse, same content, no more blocks than the source" {
	ext4_dir "$T/e"
	cd "$T/e"
	mkimage src.img 2G 24
	run_split cowclone src.img disk.img
	assert_success
	[ "$(jqo '.disk.method')" != reflink ]
	[[ "$(jqo '.disk.method')" =~ ^(copy_file_range|sparse-copy)$ ]]
	cmp src.img disk.img
	[ "$(stat -c %s disk.img)" -eq $((2 << 30)) ]
	[ "$(blocks disk.img)" -le "$(blocks src.img)" ] ||
		fail "clone allocates $(blocks disk.img) blocks, source $(blocks src.img)"
	[ "$(jqo '.disk.size')" -eq $((2 << 30)) ]
	[ "$(jqo '.disk.allocated')" -eq $(( $(blocks disk.img) * 512 )) ]
	[ "$(jqo '.disk.copied')" -ge $((24 << 20)) ]
	[ "$(jqo '.disk.path')" = "$T/e/disk.img" ]
	[ "$(jqo '.disk.source')" = "$T/e/src.img" ]
	[ "$(jqo '.disk | keys_unsorted | join(",")')" = "path,source,method,size,allocated,copied" ]
	e2fsck -fn disk.img
	assert_no_temp .
}

# extents FILE: how many extents FIEMAP gives FILE (filefrag merges the
# ones that are physically contiguous).
extents() {
	filefrag "$1" | sed -E 's/.*: ([0-9]+) extents? found/\1/'
}

@test "the ext4 copy is laid out as well as cp's: no more extents, no more blocks" {
	ext4_dir "$T/e"
	cd "$T/e"
	# the benchmark's image: 15G, about 500 MB of files
	mkimage src.img 15G 400 100
	run_split cowclone -q src.img cow.img
	assert_ok
	cp --sparse=always src.img cp.img
	sync
	cmp src.img cow.img
	[ "$(extents cow.img)" -le "$(extents cp.img)" ] ||
		fail "cowclone: $(extents cow.img) extents, cp: $(extents cp.img)"
	[ "$(blocks cow.img)" -le "$(blocks cp.img)" ] ||
		fail "cowclone: $(blocks cow.img) blocks, cp: $(blocks cp.img)"
	e2fsck -fn cow.img > /dev/null
}

# traced LOG CMD...: run CMD under strace, logging its file-syncing and
# renaming calls to LOG; CMD's status is strace's.
traced() {
	local log=$1
	shift
	# (LeakSanitizer cannot work under ptrace: SANITIZE=1 runs these
	# without leak checks)
	ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 \
		strace -f -o "$log" -e trace=fsync,fdatasync,sync_file_range,rename,renameat2 "$@"
}

# syscalls FILE: the names of the file-syncing and renaming calls in an
# strace log, in order, one per line.
syscalls() {
	grep -oE '^[0-9]+ +(fsync|fdatasync|sync_file_range|renameat2|rename)\(' "$1" |
		sed -E 's/^[0-9]+ +//; s/\($//'
}

@test "a copy reaches the disk before it is named; --no-sync leaves it to the kernel" {
	command -v strace >/dev/null || fail "strace missing"
	ext4_dir "$T/e"
	cd "$T/e"
	mkimage src.img 1G 40
	traced durable.trace cowclone -q src.img durable.img > durable.json
	[ "$(jq -r .disk.method durable.json)" = sparse-copy ]
	cmp src.img durable.img
	# the clone's fsync comes before the rename that names it
	run syscalls durable.trace
	assert_output --regexp '(^|
)fsync
renameat2'
	traced fast.trace cowclone -q --no-sync src.img fast.img > /dev/null
	cmp src.img fast.img
	[ "$(blocks fast.img)" -le "$(blocks src.img)" ]
	run syscalls fast.trace
	assert_output renameat2
	assert_no_temp .
}

@test "reflink on a loop-mounted XFS: shared extents, nothing copied" {
	command -v mkfs.xfs >/dev/null || fail "mkfs.xfs missing (xfsprogs)"
	mount_loop xfs 1G "$T/xfs" -m reflink=1
	mkimage "$T/xfs/base.img" 2G 32
	traced "$T/reflink.trace" cowclone "$T/xfs/base.img" "$T/xfs/vm1.img" > "$T/out" 2> "$T/err"
	run cat "$T/out"
	[ "$(jqo '.disk.method')" = reflink ]
	[ "$(jqo '.disk.copied')" -eq 0 ]
	# a reflink is metadata the rename is logged after: nothing to flush
	run syscalls "$T/reflink.trace"
	assert_output renameat2
	cmp "$T/xfs/base.img" "$T/xfs/vm1.img"
	run filefrag -v "$T/xfs/vm1.img"
	assert_success
	assert_output --partial shared
	# Writing into the clone leaves the base as it was.
	sum=$(imgsum "$T/xfs/base.img")
	printf 'scribble' | dd of="$T/xfs/vm1.img" bs=1 seek=4096 conv=notrunc status=none
	[ "$(imgsum "$T/xfs/base.img")" = "$sum" ]
	assert_no_temp "$T/xfs"
}

@test "an existing destination is kept without -f" {
	mkimage src.img 1G 1
	echo "user data" > disk.img
	run_split cowclone src.img disk.img
	assert_refused 73 "disk.img: already exists; give -f to replace it"
	assert_one_line
	[ "$(cat disk.img)" = "user data" ]
	assert_no_temp .
}

@test "-f replaces an existing destination" {
	mkimage src.img 1G 1
	echo "old" > disk.img
	run_split cowclone -f src.img disk.img
	assert_success
	cmp src.img disk.img
}

@test "-f never replaces a disk a running QEMU holds" {
	mkimage src.img 256M 1
	mkimage disk.img 256M 2
	sum=$(imgsum disk.img)
	qemu_hold disk.img
	run_split cowclone -f src.img disk.img
	assert_refused 75 "disk.img: in use by a running VM; not replaced"
	assert_one_line
	[ "$(imgsum disk.img)" = "$sum" ]
	assert_no_temp .
}

@test "a source a running QEMU writes to is not cloned, unless --live" {
	mkimage src.img 256M 1
	qemu_hold src.img
	run_split cowclone src.img disk.img
	assert_refused 75 "src.img: in use by a running VM that writes to it; stop it, or give --live"
	[ ! -e disk.img ]
	assert_no_temp .
	# --live needs to know the VM: not one of the workspace's
	run_split cowclone --live src.img disk.img
	assert_refused 75 "not a VM of this workspace .*give --qmp SOCKET"
	assert_one_line
	[ ! -e disk.img ]
	run_split cowclone --qmp "$T/nosuch.sock" src.img disk.img
	assert_refused 69 "no answer on its QMP socket"
	[ ! -e disk.img ]
	assert_no_temp .
	# a QEMU whose guest does not run (-S): cloned as it is, not paused
	run_split cowclone --qmp "$T/qmp.sock" src.img disk.img
	assert_ok
	[ "$(jq -r .disk.vm_state <<< "$output")" = prelaunch ]
	[ "$(jq -r .disk.paused_ms <<< "$output")" = 0 ]
	[ "$(jq -r .disk.vm <<< "$output")" = null ]
	# the live keys are the ones the man page documents
	for k in $(jq -r '.disk | keys[]' <<< "$output"); do
		grep -q "^\.It Li $k\$" "$VS_TOP/man/cowclone.1" || fail "cowclone.1 does not document $k"
	done
	[ "$(imgsum disk.img)" = "$(imgsum src.img)" ]
}

@test "--keep replaces DST and keeps the old one, renamed; refused where it cannot rename" {
	mkimage src.img 256M 1
	mkimage disk.img 256M 2
	sum=$(imgsum disk.img) ino=$(stat -c %i disk.img)
	run_split cowclone --keep old.img src.img disk.img
	assert_ok
	[ "$(jq -r .disk.kept <<< "$output")" = "$T/old.img" ]
	[ "$(stat -c %i old.img)" = "$ino" ] && [ "$(imgsum old.img)" = "$sum" ]
	[ "$(imgsum disk.img)" = "$(imgsum src.img)" ]
	assert_no_temp .
	# an existing name, another filesystem, DST itself: refused, nothing changed
	sum=$(imgsum disk.img)
	run_split cowclone --keep old.img src.img disk.img
	assert_refused 73 "old.img: already exists; --keep needs a new name"
	run_split cowclone --keep /dev/shm/vmstrap-keep-$$.img src.img disk.img
	assert_refused 73 "not on the filesystem of"
	run_split cowclone --keep disk.img src.img disk.img
	assert_refused 64 "is DST itself"
	run_split cowclone --keep "" src.img disk.img
	assert_refused 64 "name the file"
	[ "$(imgsum disk.img)" = "$sum" ] && [ ! -e /dev/shm/vmstrap-keep-$$.img ]
	assert_no_temp .
	# nothing to keep: kept is null
	run_split cowclone --keep k2.img src.img new.img
	assert_ok
	[ "$(jq -r .disk.kept <<< "$output")" = null ] && [ ! -e k2.img ]
	# never over a disk a running QEMU holds
	qemu_hold disk.img
	run_split cowclone --keep k3.img src.img disk.img
	assert_refused 75 "in use by a running VM; not replaced"
	[ ! -e k3.img ] && [ "$(imgsum disk.img)" = "$sum" ]
}

@test "a full filesystem leaves no temporary file and the destination intact" {
	mount_loop ext4 16M "$T/small"
	head -c 64M /dev/urandom > big.img
	echo "precious" > "$T/small/disk.img"
	run_split cowclone -f big.img "$T/small/disk.img"
	assert_refused 74 "No space left on device"
	assert_one_line
	[ "$(cat "$T/small/disk.img")" = precious ]
	assert_no_temp "$T/small"
	run_split cowclone big.img "$T/small/new.img"
	assert_refused 74 "No space left on device"
	[ ! -e "$T/small/new.img" ]
	assert_no_temp "$T/small"
}

@test "a signal in the middle of a copy leaves no temporary file and the destination intact" {
	ext4_dir "$T/e"
	cd "$T/e"
	# 1.5 GB of data that is not zeros: long enough a copy to interrupt.
	yes vmstrap | head -c 1536M > big.img
	echo precious > disk.img
	for sig in TERM HUP; do
		# (with the signal's default action: a job started with nohup, or
		# in the background of a script, would have it ignored)
		env --default-signal=HUP,TERM,INT cowclone -f big.img disk.img > out.json 2> err.txt &
		pid=$!
		for _ in $(seq 3000); do
			compgen -G '.disk.img.tmp-*' > /dev/null && break
			sleep 0.001
		done
		compgen -G '.disk.img.tmp-*' > /dev/null || fail "no temporary file was seen"
		kill -s "$sig" "$pid"
		st=0
		wait "$pid" || st=$?
		[ "$st" -eq $((128 + $(kill -l "$sig"))) ] || fail "SIG$sig: exit status $st: $(cat err.txt)"
		[ ! -s out.json ] || fail "SIG$sig: stdout: $(cat out.json)"
		[ "$(cat disk.img)" = precious ] || fail "SIG$sig: disk.img changed"
		assert_no_temp .
	done
}

@test "-s grows the clone and its ext4 filesystem; e2fsck finds it clean" {
	mkimage src.img 1G 4
	run_split cowclone -s 6G src.img disk.img
	assert_success
	[ "$(jqo '.disk.size')" -eq $((6 << 30)) ]
	[ "$(stat -c %s disk.img)" -eq $((6 << 30)) ]
	[ "$(stat -c %s src.img)" -eq $((1 << 30)) ]
	e2fsck -fn disk.img
	bs=$(dumpe2fs -h disk.img 2>/dev/null | awk -F: '/^Block size/ {print $2+0}')
	count=$(dumpe2fs -h disk.img 2>/dev/null | awk -F: '/^Block count/ {print $2+0}')
	[ "$((count * bs))" -eq $((6 << 30)) ] || fail "filesystem is $((count * bs)) bytes"
	[ "$(debugfs -R 'cat /etc/hostname' disk.img 2>/dev/null)" = "vmstrap test image" ]
	assert_no_temp .
}

@test "-s equal to the source's size keeps it; smaller is refused" {
	mkimage src.img 6G 0
	run_split cowclone -s 6G src.img same.img
	assert_success
	[ "$(stat -c %s same.img)" -eq $((6 << 30)) ]
	# Nothing grows, so the image need not be ext4.
	truncate -s 5G raw.img
	run_split cowclone -s 5G raw.img raw2.img
	assert_success
	run_split cowclone -s 5G src.img small.img
	assert_refused 64 "-s 5G is smaller than src.img \(6G\): a clone can grow, never shrink"
	[ ! -e small.img ]
}

@test "-s on a file that holds no ext4 filesystem is refused" {
	truncate -s 5G raw.img
	run_split cowclone -s 6G raw.img disk.img
	assert_refused 65 "raw.img: not an ext2/3/4 filesystem"
	[ ! -e disk.img ]
	assert_no_temp .
}

@test "NAME reads the document: the disk goes beside the base, other sections pass through" {
	mkdir ws
	mkimage ws/slicer-base.img 1G 1
	doc=$(jq -cn --arg p "$T/ws/slicer-base.img" \
		'{image:{ref:"x",n:[1,2.5,null],"q\"uote":"a\nb"},base:{path:$p,group:"slicer"}}')
	run_split cowclone slicer-1 <<< "$doc"
	assert_success
	[ "$(jqo '.disk.path')" = "$T/ws/slicer-1.img" ]
	[ "$(jqo '.disk.source')" = "$T/ws/slicer-base.img" ]
	[ "$(printf '%s\n' "$output" | wc -l)" -eq 1 ]
	jq -e --argjson d "$doc" '.image == $d.image and .base == $d.base' <<< "$output"
	[ "$(jqo 'keys_unsorted | join(",")')" = "image,base,disk" ]
	cmp ws/slicer-base.img ws/slicer-1.img
}

@test "NAME without a document, or with a bad one, is refused" {
	run_split cowclone slicer-1 < /dev/null
	assert_refused 64 "no pipeline document on stdin"
	run_split cowclone slicer-1 <<< '{"base":'
	assert_refused 65 "invalid pipeline document on stdin at byte [0-9]+"
	assert_one_line
	run_split cowclone slicer-1 <<< '{"base":{"path":"/x"}} {}'
	assert_refused 65 "at byte 24"
	run_split cowclone slicer-1 <<< '[1]'
	assert_refused 65 "expected a JSON object, got an array"
	run_split cowclone slicer-1 <<< '{"rootfs":{}}'
	assert_refused 65 "no 'base' section"
	run_split cowclone slicer-1 <<< '{"base":{"path":7}}'
	assert_refused 65 "base.path is a number"
	run_split cowclone slicer-1 <<< '{"base":{"path":"rel/base.img"}}'
	assert_refused 65 "not an absolute path"
	run_split cowclone slicer-1 <<< '{"base":{"path":"/no/such/base.img"}}'
	assert_refused 66 "/no/such/base.img: No such file"
	run_split cowclone ../evil <<< '{"base":{"path":"/x"}}'
	assert_refused 64 "invalid disk name '../evil'"
}

@test "a failed write to stdout is an error" {
	mkimage src.img 256M 0
	run --separate-stderr bash -c 'cowclone src.img disk.img > /dev/full'
	[ "$status" -eq 74 ]
	[[ $stderr == *"stdout: No space left on device"* ]]
}

@test "progress is drawn on a terminal only, and never with NO_COLOR or -q" {
	command -v script >/dev/null || fail "script(1) missing (bsdutils)"
	ext4_dir "$T/e"
	cd "$T/e"
	mkimage src.img 1G 16
	script -qec "cowclone src.img a.img >/dev/null" /dev/null > tty.out
	grep -q 'cowclone: copying' tty.out
	NO_COLOR=1 script -qec "cowclone src.img b.img >/dev/null" /dev/null > nocolor.out
	! grep -q 'copying' nocolor.out || false
	script -qec "cowclone -q src.img c.img >/dev/null" /dev/null > quiet.out
	! grep -q 'copying' quiet.out || false
	run_split cowclone src.img d.img
	assert_success
	[ -z "$stderr" ]
}
