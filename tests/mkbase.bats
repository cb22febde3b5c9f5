#!/usr/bin/env bats
# mkbase: real ext4 images from real trees (oci-unpack of umoci-built and
# crafted images), checked by e2fsck and compared entry by entry through a
# read-only loop mount.

load helpers

setup_file() {
	rich_fixture
}

setup() {
	cd "$T"
}

teardown() {
	[ -z "${R:-}" ] || { umount "$R/m" 2>/dev/null || true; rm -rf "$R"; }
	umount "$T/m" 2>/dev/null || true
	unmount_all
}

# image REF LINES...: a layout ./L with a one-layer image REF from
# tests/mktar lines, unpacked to ./tree-REF (oci-unpack's stamp beside it).
image() {
	local ref=$1
	shift
	printf '%s\n' "$@" | "$VS_TOP/tests/mktar" "$ref.tar" || fail "mktar"
	[ -f L/oci-layout ] || umoci init --layout L
	umoci new --image "L:$ref"
	umoci raw add-layer --image "L:$ref" "$ref.tar"
	oci-unpack -q -o "$T/tree-$ref" L "$ref" > "doc-$ref" || fail "oci-unpack $ref"
}

# listing IMG: the image's tree as tests/treelist sees it, through a
# read-only loop mount (lost+found, which mke2fs makes, left out).
listing() {
	mkdir -p "$T/m"
	mount -o loop,ro "$1" "$T/m" || fail "cannot mount $1"
	"$VS_TOP/tests/treelist" -d "$T/m" | grep -v '^lost+found'
	umount "$T/m"
}

@test "-h, -V, bad options" {
	run_split mkbase -h
	assert_success
	assert_output --partial "usage: mkbase"
	run_split mkbase -V
	assert_output --regexp '^mkbase \(vmstrap\) '
	run_split mkbase -x
	assert_refused 64 "unknown option"
	run_split mkbase -s 15G a b
	assert_refused 64 "too many operands"
	run_split mkbase -s 15G -g 'a/b' tree
	assert_refused 64 "invalid group name"
	run_split mkbase -s 15G < /dev/null
	assert_refused 64 "no pipeline document"
	run_split mkbase -s 15G <<< '{"image": {}}'
	assert_refused 65 "layout"
	run_split mkbase -s 15G <<< '{"other": {}}'
	assert_refused 65 "rootfs"
	run_split mkbase -s 15G -i L
	assert_refused 64 "-i LAYOUT needs the image.s REF"
}

@test "bad sizes are refused, showing the accepted form" {
	mkdir tree
	for s in 4G 15 15GB abc -1G 1.5G 99999999999T; do
		run_split mkbase -s "$s" tree
		echo "size $s"	# (shown should the next line fail)
		assert_refused 64 "$s"
		assert_one_line
		[[ $stderr =~ 15G ]] || fail "size $s: no accepted form shown: $stderr"
	done
	run_split mkbase tree
	assert_refused 64 "no size"
	[ -z "$(ls -A . | grep -v -e "^tree$" -e "^separate-stderr-")" ] || fail "left: $(ls -A)"
}

@test "every entry type arrives exactly; e2fsck -fn is clean; the image is sparse" {
	need_root "the fixture has devices and owners, and the check mounts the image"
	oci-unpack -q -o "$T/tree" "$RICH" rich > doc
	run_split mkbase -s 5G < doc
	assert_success
	local img=$T/slicer-base.img
	[ "$(jqo .base.path)" = "$img" ]
	[ "$(jqo .base.group)" = slicer ]
	[ "$(jqo .base.size)" -eq $((5 << 30)) ]
	[ "$(stat -c %s "$img")" -eq $((5 << 30)) ]
	[ "$(jqo .base.source)" = "$(jq -r .rootfs.digest doc)" ]
	[ "$(jqo .base.reused)" = false ]
	[ "$(jqo .base.uuid)" = "$(dumpe2fs -h "$img" 2>/dev/null | awk '/UUID/ && /Filesystem/ {print $3}')" ]
	[ "$(jqo .image.digest)" = "$(jq -r .image.digest doc)" ]
	# sparse: a few megabytes of a 5G file
	local alloc
	alloc=$(($(stat -c %b "$img") * 512))
	[ "$(jqo .base.allocated)" -eq "$alloc" ]
	[ "$alloc" -lt $((20 << 20)) ] || fail "allocated $alloc bytes"
	e2fsck -fn "$img"
	dumpe2fs -h "$img" 2>/dev/null | grep -q 'features:.*extent'
	"$VS_TOP/tests/treelist" -d tree > want
	listing "$img" > got
	diff -u want got || fail "the image differs from the tree (- tree, + image)"
	grep -q '^dev/sda b 0660 0 6 .* dev 8,0 ' got
	grep -q '^bin/ping .*security.capability=' got
	grep -q '^usr/bin/c .* link-of usr/bin/a ' got
	grep -q '^etc/owned - 0644 1000 1001 ' got
}

@test "rootless: unpacked and built by an ordinary user, owned by root inside" {
	need_root "building the fixture, changing user and mounting need root"
	R=$(mktemp -d /tmp/vmstrap-rootless.XXXXXX)
	chmod 755 "$R"
	cp -a "$RICH" "$R/rich"
	chown nobody "$R"
	cd "$R"
	runuser -u nobody -- "$VS_BIN/oci-unpack" -q -o "$R/t" rich rich > doc 2> /dev/null
	[ "$(jq -r .rootfs.rootless doc)" = true ]
	run_split runuser -u nobody -- "$VS_BIN/mkbase" -s 5G -o "$R/b.img" < doc
	assert_success
	[ "$(stat -c %U b.img)" = nobody ]
	e2fsck -fn b.img
	# the same as a tree unpacked as root, but for the owner of the one
	# symlink, which Linux let nobody record
	oci-unpack -q -o "$R/rt" rich rich > /dev/null
	"$VS_TOP/tests/treelist" -d rt | sed '/^etc\/link /s/ 7 8 / 0 0 /' > want
	mkdir m && mount -o loop,ro b.img m
	"$VS_TOP/tests/treelist" -d m | grep -v '^lost+found' > got
	umount m
	diff -u want got
	grep -q '^bin/su - 4755 0 0 ' got
	grep -q '^dev/null c ' got
	! grep -q 'user.rootlesscontainers\|user.vmstrap' got || false
	# what RHEL and Fedora images hold, unreadable to the owner: read all
	# the same, their modes kept, in the tree and in the image; and with
	# the tree changed (its record no longer its), still rootless
	runuser -u nobody -- sh -c 'cd t && echo s > etc/shadow0 && chmod 0 etc/shadow0 &&
		echo x > bin/sudo1 && chmod 4111 bin/sudo1 && mkdir -p var/secret &&
		echo y > var/secret/in && chmod 0311 var/secret && mkdir closed && chmod 0 closed'
	run_split runuser -u nobody -- "$VS_BIN/mkbase" -s 5G -o "$R/b2.img" "$R/t"
	assert_success
	[ "$(jqo .base.source)" = null ]
	e2fsck -fn b2.img
	[ "$(stat -c %a t/etc/shadow0)" = 0 ] && [ "$(stat -c %a t/var/secret)" = 311 ] &&
		[ "$(stat -c %a t/bin/sudo1)" = 4111 ] && [ "$(stat -c %a t/closed)" = 0 ]
	mount -o loop,ro b2.img m
	[ "$(stat -c '%a %u' m/etc/shadow0)" = "0 0" ] && [ "$(cat m/etc/shadow0)" = s ]
	[ "$(stat -c '%a %u' m/bin/sudo1)" = "4111 0" ]
	[ "$(stat -c '%a %u' m/var/secret)" = "311 0" ] && [ "$(cat m/var/secret/in)" = y ]
	[ "$(stat -c '%U' m/etc)" = root ] && [ "$(stat -c '%a' m/closed)" = 0 ]
	umount m
}

@test "a deep tree is built, not a crash" {
	# 6000 levels: deeper than the main thread's stack would take
	python3 -c '
import os
os.mkdir("tree")
os.chdir("tree")
for i in range(6000):
    os.mkdir("a")
    os.chdir("a")
open("f", "w").write("deep\n")'
	run_split mkbase -q -s 5G -o "$T/d.img" tree
	assert_success
	e2fsck -fn d.img > /dev/null
	for ((i = 0; i < 6000; i++)); do echo "cd a"; done > cmds
	echo "cat f" >> cmds
	[ "$(debugfs -f cmds d.img 2>/dev/null | tail -1)" = deep ]
	# deeper than the open-file limit allows: said so, nothing left
	run_split bash -c 'ulimit -n 64 && exec "$0" -q -s 5G -o "$1" tree' "$VS_BIN/mkbase" "$T/d2.img"
	assert_refused 71 "the tree is deeper than the limit on open files allows: raise it \(ulimit -n\)"
	[ ! -e d2.img ]
	assert_no_temp .
}

@test "paths longer than PATH_MAX arrive" {
	name=$(printf 'n%.0s' $(seq 200))
	python3 -c '
import os, sys
os.mkdir("tree")
os.chdir("tree")
for i in range(30):
    os.mkdir(sys.argv[1])
    os.chdir(sys.argv[1])
open("f", "w").write("far\n")' "$name"
	run_split mkbase -q -s 5G -o "$T/p.img" tree
	assert_success
	e2fsck -fn p.img > /dev/null
	for ((i = 0; i < 30; i++)); do echo "cd $name"; done > cmds
	echo "cat f" >> cmds
	[ "$(debugfs -f cmds p.img 2>/dev/null | tail -1)" = far ]
}

@test "a tree its user cannot read is refused with 77" {
	need_root "changing to another user needs root"
	R=$(mktemp -d /tmp/vmstrap-rootless.XXXXXX)
	chmod 755 "$R"
	mkdir -p "$R/tree/private" && echo x > "$R/tree/private/f" && chmod 700 "$R/tree/private"
	chown nobody "$R"
	run_split runuser -u nobody -- "$VS_BIN/mkbase" -s 5G -o "$R/b.img" "$R/tree"
	assert_refused 77 "private: Permission denied"
	[ ! -e "$R/b.img" ]
	assert_no_temp "$R"
}

@test "a tree that does not fit is refused before a base appears" {
	mkdir tree
	# 6G of allocated blocks (fallocate: no time spent writing them)
	fallocate -l 6G tree/big
	echo small > tree/small
	run_split mkbase -s 5G -o "$T/b.img" tree
	assert_refused 65 "does not fit: it needs [0-9.]+[MG]"
	assert_one_line
	[ ! -e b.img ]
	assert_no_temp .
	# a sparse file counts for its data, not its size
	rm tree/big
	truncate -s 6G tree/sparse
	printf x | dd of=tree/sparse bs=1 seek=4G conv=notrunc status=none
	run_split mkbase -s 5G -o "$T/b.img" tree
	assert_success
	e2fsck -fn b.img > /dev/null
	[ "$(debugfs -R 'stat /sparse' b.img 2>/dev/null | sed -n 's/.*Size: \([0-9]*\).*/\1/p' | head -1)" = 6442450944 ]
}

@test "attribute blocks and extent trees count: a tree that fits only without them is refused first" {
	# a 5G filesystem nearly filled with data (in memory: /dev/shm),
	# then 16000 files whose 300-byte attributes need a block each
	R=$(mktemp -d /dev/shm/vmstrap-fit.XXXXXX)
	mkdir "$R/empty" "$R/tree"
	mkbase -q -s 5G -o "$R/e.img" "$R/empty" > /dev/null
	free=$(dumpe2fs -h "$R/e.img" 2>/dev/null | sed -n 's/^Free blocks: *//p')
	rm -f "$R/e.img" "$R/.e.img.json"
	yes vmstrap | head -c $(((free - 12000) * 4096)) > "$R/tree/data"
	mkdir "$R/tree/x"
	v=$(head -c 300 /dev/zero | tr '\0' v)
	for ((i = 0; i < 16000; i++)); do
		printf '# file: x/%d\nuser.big="%s"\n\n' "$i" "$v"
	done > "$R/attrs"
	(cd "$R/tree/x" && seq 0 15999 | xargs touch)
	(cd "$R/tree" && setfattr --restore="$R/attrs")
	run_split mkbase -s 5G -o "$R/b.img" "$R/tree"
	assert_refused 65 "does not fit: it needs [0-9.]+[MG]"
	assert_one_line
	[ ! -e "$R/b.img" ]
	assert_no_temp "$R"
	# without the attributes it fits, and e2fsck finds it clean
	rm -rf "$R/tree/x" && mkdir "$R/tree/x"
	(cd "$R/tree/x" && seq 0 15999 | xargs touch)
	run_split mkbase -q -s 5G -o "$R/b.img" "$R/tree"
	assert_success
	e2fsck -fn "$R/b.img" > /dev/null
}

@test "file data: contiguous data is one extent, a file of many runs gets an extent tree" {
	mkdir tree
	head -c 40M /dev/urandom > tree/one
	# 1500 runs of data between blocks of zeros: more extents than the
	# inode holds, so the tree needs leaf and index blocks
	for ((i = 0; i < 1500; i++)); do
		head -c 4096 /dev/urandom
		head -c 4096 /dev/zero
	done > tree/runs
	mkbase -q -s 5G -o b.img tree > /dev/null
	e2fsck -fn b.img > /dev/null
	run debugfs -R 'ex /one' b.img
	[ "$(grep -c '^ *0/ *0 ' <<< "$output")" -eq 1 ]
	run debugfs -R 'ex /runs' b.img
	[ "$(grep -c '^ *2/ *2 ' <<< "$output")" -eq 1500 ]
	for f in one runs; do
		debugfs -R "cat /$f" b.img 2>/dev/null | cmp - "tree/$f"
	done
	# blocks: the data, plus the tree's own few
	blocks=$(debugfs -R 'stat /runs' b.img 2>/dev/null | sed -n 's/.*Blockcount: \([0-9]*\).*/\1/p')
	[ "$blocks" -ge $((1500 * 8)) ] && [ "$blocks" -le $((1510 * 8)) ]
}

@test "the host's mke2fs.conf does not change the filesystem" {
	mkdir tree
	echo hi > tree/f
	cat > odd.conf <<-EOF
	[defaults]
		inode_size = 128
		blocksize = 1024
	[fs_types]
		ext4 = {
			features = has_journal,extent,inline_data,64bit
		}
	EOF
	MKE2FS_CONFIG=$PWD/odd.conf mkbase -q -s 5G -o b.img tree > /dev/null
	e2fsck -fn b.img > /dev/null
	run dumpe2fs -h b.img
	assert_line --regexp '^Inode size:[[:space:]]+256$'
	assert_line --regexp '^Block size: +4096$'
	assert_line --regexp '^Filesystem features: +has_journal ext_attr resize_inode dir_index filetype extent 64bit flex_bg sparse_super large_file huge_file dir_nlink extra_isize metadata_csum$'
}

@test "what a careless tree holds: sockets, attributes on symlinks, bad records, a file lost+found" {
	mkdir tree
	python3 -c 'import socket; socket.socket(socket.AF_UNIX).bind("tree/sock")'
	echo f > tree/f
	ln -s f tree/sl
	setfattr -h -n trusted.sl -v symx tree/sl
	run_split mkbase -s 5G -o "$T/b.img" tree
	assert_success
	e2fsck -fn b.img > /dev/null
	debugfs -R 'stat /sock' b.img 2>/dev/null | grep -q 'Type: socket' || fail "no socket"
	debugfs -R 'ea_list /sl' b.img 2>/dev/null | grep -q 'trusted.sl.*symx' ||
		fail "the symlink's attribute: $(debugfs -R 'ea_list /sl' b.img 2>&1)"
	# rootless records that cannot be what oci-unpack wrote
	mkdir r && echo > r/dev
	jq -cn --arg p "$T/r" '{rootfs:{path:$p,rootless:true}}' > doc
	for rec in "c 5000 1" "c 1 4294967299"; do
		setfattr -n user.vmstrap.device -v "$rec" r/dev
		run_split mkbase -s 5G -o "$T/r.img" < doc
		assert_refused 65 "malformed user.vmstrap.device"
	done
	setfattr -n user.vmstrap.device -v "c        1                   3        " r/dev
	run_split mkbase -s 5G -o "$T/r.img" < doc
	assert_refused 65 "malformed user.vmstrap.device attribute \(too long\)"
	setfattr -x user.vmstrap.device r/dev
	setfattr -n user.rootlesscontainers -v "0x08e807$(printf '1a50%0160d' 0)10e907" r/dev
	run_split mkbase -s 5G -o "$T/r.img" < doc
	assert_refused 65 "malformed user.rootlesscontainers attribute \(too long\)"
	[ ! -e r.img ]
	# lost+found must be a directory
	rm -rf tree && mkdir tree && echo x > tree/lost+found
	run_split mkbase -s 5G -o "$T/l.img" tree
	assert_refused 65 "/lost\+found in the tree is not a directory"
	[ ! -e l.img ]
	assert_no_temp .
}

@test "outputs that cannot be: a directory, inside the tree, a place nothing can be made" {
	mkdir -p tree/sub dir
	echo x > tree/f
	run_split mkbase -s 5G -o "$T/dir" tree
	assert_refused 73 "dir is a directory: name the image file"
	run_split mkbase -s 5G -o "$T/tree/sub/b.img" tree
	assert_refused 64 "b.img is inside the tree it is built from .*: it would copy itself"
	[ ! -e tree/sub/b.img ]
	assert_no_temp tree/sub
	run_split mkbase -s 5G -o /proc/vmstrap-b.img tree
	assert_refused 73 "cannot create /proc/vmstrap-b.img: No such file or directory"
	run_split mkbase -s 5G -o "$T/none/b.img" tree
	assert_refused 73 "none"
}

@test "what ext4 cannot hold: too many links, too big a file, too many attributes; times clamped" {
	R=$(mktemp -d /dev/shm/vmstrap-limits.XXXXXX)
	mkdir "$R/t"
	echo x > "$R/t/f"
	(cd "$R/t" && for ((i = 0; i < 65001; i++)); do echo "h$i"; done | xargs -n 5000 sh -c 'for n; do ln f "$n"; done' -)
	run_split mkbase -s 5G -o "$T/b.img" "$R/t"
	assert_refused 65 "f has 65002 hard links; an ext4 file has at most 65000"
	rm -rf "$R/t" && mkdir "$R/t"
	truncate -s 17T "$R/t/huge"
	run_split mkbase -s 5G -o "$T/b.img" "$R/t"
	assert_refused 65 "huge is 18691697672192 bytes; an ext4 file with 4096-byte blocks holds at most 16T"
	rm -f "$R/t/huge"
	echo x > "$R/t/big"
	setfattr -n user.big -v "$(head -c 5000 /dev/zero | tr '\0' v)" "$R/t/big"
	run_split mkbase -s 5G -o "$T/b.img" "$R/t"
	assert_refused 65 "big: its attributes take 5020 bytes; ext4 holds at most 4060"
	[ ! -e b.img ]
	assert_no_temp .
	setfattr -x user.big "$R/t/big"
	touch -d 1800-01-01 "$R/t/old"
	touch -d @20000000000 "$R/t/future"
	mkbase -q -s 5G -o "$T/b.img" "$R/t" > /dev/null
	[[ $(debugfs -R 'stat /old' b.img 2>/dev/null | grep ' mtime:') == *1901* ]]
	[[ $(debugfs -R 'stat /future' b.img 2>/dev/null | grep ' mtime:') == *2446* ]]
	rm -rf "$R"
}

@test "a source with 1 KiB blocks: runs of data sharing one of our blocks arrive once, exactly" {
	need_root "a loop-mounted ext4 with 1 KiB blocks"
	mount_loop ext4 64M "$T/small" -b 1024
	mkdir "$T/small/t"
	python3 -c 'import os
f = os.open("'"$T"'/small/t/f", os.O_CREAT | os.O_WRONLY)
os.pwrite(f, b"A" * 1024, 0)
os.pwrite(f, b"B" * 1024, 3072)
os.pwrite(f, b"C" * 1024, 5120)'
	mkbase -q -s 5G -o "$T/b.img" "$T/small/t" > /dev/null
	e2fsck -fn b.img > /dev/null
	debugfs -R 'cat /f' b.img 2>/dev/null | cmp - "$T/small/t/f"
	unmount_all
}

@test "rootless: a build stopped while it reads an unreadable file gives the tree its modes back" {
	need_root "changing user"
	R=$(mktemp -d /tmp/vmstrap-rootless.XXXXXX)
	chmod 755 "$R"
	chown nobody "$R"
	runuser -u nobody -- sh -c 'cd "$1" && mkdir -p t/locked && head -c 1500M /dev/zero | tr "\0" x > t/locked/big &&
		chmod 0 t/locked/big && chmod 0311 t/locked' - "$R"
	runuser -u nobody -- "$VS_BIN/mkbase" -q -s 5G -o "$R/b.img" "$R/t" > /dev/null 2>&1 8>&- &
	pid=$!
	# until the file is being read (its mode lent), then stop the build
	for ((i = 0; i < 500; i++)); do
		[ "$(stat -c %a "$R/t/locked/big")" = 400 ] && break
		sleep 0.01
	done
	[ "$(stat -c %a "$R/t/locked/big")" = 400 ] || fail "the build never read the file"
	kill -TERM "$pid"
	wait "$pid" || true
	[ "$(stat -c %a "$R/t/locked/big")" = 0 ]
	[ "$(stat -c %a "$R/t/locked")" = 311 ]
	[ ! -e "$R/b.img" ]
	assert_no_temp "$R"
}

@test "rootless: a build killed (-9) while a mode is lent: the next build gives it back first, image and tree keep their modes" {
	need_root "changing user"
	R=$(mktemp -d /tmp/vmstrap-rootless.XXXXXX)
	chmod 755 "$R"
	chown nobody "$R"
	runuser -u nobody -- sh -c 'cd "$1" && mkdir -p t/locked t/etc && head -c 1500M /dev/zero | tr "\0" x > t/locked/big &&
		echo secret > t/etc/shadow && chmod 0 t/locked/big t/etc/shadow && chmod 0311 t/locked' - "$R"
	runuser -u nobody -- "$VS_BIN/mkbase" -q -s 5G -o "$R/b.img" "$R/t" > /dev/null 2>&1 8>&- &
	pid=$!
	# the moment of the lend: the file being read, its directory and it lent
	for ((i = 0; i < 500; i++)); do
		[ "$(stat -c %a "$R/t/locked/big")" = 400 ] && break
		sleep 0.01
	done
	[ "$(stat -c %a "$R/t/locked/big")" = 400 ] || fail "the build never read the file"
	# (mkbase is runuser's child, and valgrind's under VALGRIND=1)
	pkill -9 -f "$VS_BIN/mkbase -q -s 5G -o $R/b.img" || true
	pkill -9 -f "valgrind.*mkbase -q -s 5G -o $R/b.img" || true
	wait "$pid" || true
	# what SIGKILL leaves: the modes lent, and the journal beside the tree
	[ "$(stat -c %a "$R/t/locked/big")" = 400 ]
	[ -s "$R/.t.lent" ]
	[ ! -e "$R/b.img" ]
	# the next build, as the same user, or by another name for the tree
	ln -s t "$R/t-link"
	run_split runuser -u nobody -- "$VS_BIN/mkbase" -q -s 5G -o "$R/b.img" "$R/t-link"
	assert_ok
	[ "$(stat -c %a "$R/t/locked/big")" = 0 ] && [ "$(stat -c %a "$R/t/locked")" = 311 ]
	[ "$(stat -c %a "$R/t/etc/shadow")" = 0 ]
	[ ! -e "$R/.t.lent" ] && [ ! -e "$R/.t-link.lent" ]
	debugfs -R 'stat /locked/big' "$R/b.img" 2>/dev/null | grep -q 'Mode:  0000' ||
		fail "big in the image: $(debugfs -R 'stat /locked/big' "$R/b.img" 2>/dev/null | head -3)"
	debugfs -R 'stat /locked' "$R/b.img" 2>/dev/null | grep -q 'Mode:  0311'
	debugfs -R 'stat /etc/shadow' "$R/b.img" 2>/dev/null | grep -q 'Mode:  0000'
	e2fsck -fn "$R/b.img" > /dev/null
	# a journal by root's hand is replayed too, before root reads the tree
	runuser -u nobody -- chmod 0644 "$R/t/etc/shadow"
	printf '0 etc/shadow\0' > "$R/.t.lent"
	run_split mkbase -q -f -s 5G -o "$R/b.img" "$R/t"
	assert_ok
	[ "$(stat -c %a "$R/t/etc/shadow")" = 0 ] && [ ! -e "$R/.t.lent" ]
	debugfs -R 'stat /etc/shadow' "$R/b.img" 2>/dev/null | grep -q 'Mode:  0000'
	# a journal that is not one is refused, the tree left alone
	printf 'garbage\0' > "$R/.t.lent"
	run_split mkbase -q -f -s 5G -o "$R/b2.img" "$R/t"
	assert_refused 65 "t.lent: a malformed record"
	[ ! -e "$R/b2.img" ]
	rm -rf "$R"
}

@test "the warm path: reused; rebuilt for a new digest, a new size, or -f" {
	image a "f|a|one"
	image b "f|b|two"
	run_split mkbase -s 5G -o "$T/b.img" tree-a
	assert_success
	[ "$(jqo .base.source)" = "$(jq -r .rootfs.digest doc-a)" ]
	local ino mt
	ino=$(stat -c %i b.img) mt=$(stat -c %Y.%y b.img)
	run_split mkbase -s 5G -o "$T/b.img" tree-a
	assert_success
	[ "$(jqo .base.reused)" = true ]
	[ "$(stat -c %i b.img)" = "$ino" ] && [ "$(stat -c %Y.%y b.img)" = "$mt" ]
	# from the document too
	run_split mkbase -s 5G -o "$T/b.img" < doc-a
	assert_success
	[ "$(jqo .base.reused)" = true ]
	# a clone of the old base keeps working while the base is replaced
	cp --reflink=auto b.img clone.img
	run_split mkbase -s 5G -o "$T/b.img" tree-b
	assert_success
	[ "$(jqo .base.reused)" = false ]
	[ "$(stat -c %i b.img)" != "$ino" ]
	debugfs -R 'cat /b' b.img 2>/dev/null | grep -qx two
	debugfs -R 'cat /a' clone.img 2>/dev/null | grep -qx one
	e2fsck -fn clone.img
	run_split mkbase -s 6G -o "$T/b.img" tree-b
	assert_success
	[ "$(jqo .base.reused)" = false ] && [ "$(stat -c %s b.img)" -eq $((6 << 30)) ]
	run_split mkbase -f -s 6G -o "$T/b.img" tree-b
	assert_success
	[ "$(jqo .base.reused)" = false ]
	# a base changed behind our back is not taken for the recorded one
	run_split mkbase -s 6G -o "$T/b.img" tree-b
	[ "$(jqo .base.reused)" = true ]
	printf x | dd of=b.img bs=1 seek=100000 conv=notrunc 2>/dev/null
	run_split mkbase -s 6G -o "$T/b.img" tree-b
	[ "$(jqo .base.reused)" = false ]
	assert_no_temp .
}

@test "the group and its storage_size come from slicer-mac.yaml" {
	image a "f|a|one"
	cat > slicer-mac.yaml <<-'EOF'
	config:
	  host_groups:
	    - name: web
	      storage_size: 6G
	EOF
	run_split mkbase -g web tree-a
	assert_success
	[ "$(jqo .base.path)" = "$T/web-base.img" ]
	[ "$(jqo .base.size)" -eq $((6 << 30)) ]
	run_split mkbase -g db tree-a
	assert_refused 78 "db"
	run_split mkbase -C "$T" -g web -s 7G -o other.img tree-a
	assert_success
	[ "$(jqo .base.size)" -eq $((7 << 30)) ]
}

@test "a killed build leaves no base under the final name, and the old base intact" {
	image a "f|a|one"
	run_split mkbase -s 5G -o "$T/b.img" tree-a
	assert_success
	local sum
	sum=$(imgsum b.img)
	mkdir big
	for i in 1 2 3 4; do head -c 200M /dev/urandom > big/f$i; done
	mkbase -q -f -s 5G -o "$T/b.img" big > /dev/null 2>&1 &
	local pid=$!
	while [ -z "$(find . -maxdepth 1 -name '.b.img.tmp-*')" ]; do
		kill -0 "$pid" 2>/dev/null || fail "mkbase ended before it could be killed"
		sleep 0.02
	done
	sleep 0.2
	kill -KILL "$pid"
	wait "$pid" || true
	[ "$(imgsum b.img)" = "$sum" ] || fail "the old base changed"
	e2fsck -fn b.img
	# SIGTERM cleans up after itself; the next run removes what -9 left
	mkbase -q -f -s 5G -o "$T/b.img" big > /dev/null 2>&1 &
	pid=$!
	while [ -z "$(find . -maxdepth 1 -name '.b.img.tmp-*' -newer b.img)" ]; do
		kill -0 "$pid" 2>/dev/null || fail "mkbase ended before it could be stopped"
		sleep 0.02
	done
	kill -TERM "$pid"
	wait "$pid" || true
	[ "$(imgsum b.img)" = "$sum" ]
	run_split mkbase -s 5G -o "$T/b.img" tree-a
	assert_success
	assert_no_temp .
}

@test "SOURCE_DATE_EPOCH: the same tree and size give a byte-identical image" {
	image a "d|etc" "f|etc/hostname|repro" "l|etc/link|hostname" "f|data|x"
	SOURCE_DATE_EPOCH=1700000000 mkbase -q -s 5G -o "$T/1.img" tree-a > one
	sleep 1.1
	SOURCE_DATE_EPOCH=1700000000 mkbase -q -s 5G -o "$T/2.img" tree-a > two
	cmp 1.img 2.img
	[ "$(jq -r .base.uuid one)" = "$(jq -r .base.uuid two)" ]
	mkbase -q -s 5G -o "$T/3.img" tree-a > three
	! cmp -s 1.img 3.img || false
	[ "$(jq -r .base.uuid one)" != "$(jq -r .base.uuid three)" ]
	run_split env SOURCE_DATE_EPOCH=soon mkbase -s 5G -o "$T/4.img" tree-a
	assert_refused 64 "SOURCE_DATE_EPOCH"
	# beyond what an ext4 superblock holds (2106): refused, not wrapped
	run_split env SOURCE_DATE_EPOCH=4294967296 mkbase -s 5G -o "$T/4.img" tree-a
	assert_refused 64 "SOURCE_DATE_EPOCH '4294967296': expected a whole number from 0 to 4294967295"
	[ ! -e 4.img ]
	assert_no_temp .
	# the same image unpacked again, a second later: the tree's root
	# (which no layer declares) has a newer time, clamped
	sleep 1.1
	oci-unpack -q -o "$T/again" L a > doc-again
	[ "$(stat -c %Y tree-a)" != "$(stat -c %Y again)" ] || fail "the trees' times do not differ"
	SOURCE_DATE_EPOCH=1700000000 mkbase -q -s 5G -o "$T/5.img" < doc-again > five
	cmp 1.img 5.img
	# a tree with no digest: the same image wherever the tree is
	cp -a tree-a o1 && mkdir -p x/y && cp -a tree-a x/y/o2
	SOURCE_DATE_EPOCH=1700000000 mkbase -q -s 5G -o "$T/6.img" o1 > /dev/null
	SOURCE_DATE_EPOCH=1700000000 mkbase -q -s 5G -o "$T/7.img" x/y/o2 > /dev/null
	cmp 6.img 7.img
}

@test "the base section's keys are the ones vmstrap(7) and mkbase(1) document" {
	image a "f|a|one"
	run_split mkbase -s 5G -o "$T/b.img" tree-a
	assert_success
	local code seven one
	code=$(jqo '.base | keys_unsorted | .[]')
	seven=$(awk '/^\.Ss base$/ {f=1; next} f && /^\.S[sh] / {f=0} f && /^\.It Li / {print $3}' "$VS_TOP/man/vmstrap.7")
	one=$(awk '/^\.It Li / {print $3}' "$VS_TOP/man/mkbase.1")
	[ "$code" = "$seven" ] || fail "code: $code; vmstrap.7: $seven"
	[ "$code" = "$one" ] || fail "code: $code; mkbase.1: $one"
}
