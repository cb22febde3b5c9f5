#!/usr/bin/env bats
# mkbase straight from an image's layers (no tree in between): the base
# equals umoci's unpack entry by entry, whiteouts leave nothing behind,
# ownership comes from the layers whoever builds, bad layers leave no base,
# builds are reproducible, both inflaters give the same bytes.

load helpers

setup_file() {
	rich_fixture
}

setup() {
	cd "$T"
}

teardown() {
	umount "$T/m" 2>/dev/null || true
	unmount_all
}

# listing IMG: the image's tree as tests/treelist sees it, through a
# read-only loop mount (lost+found, which mke2fs makes, left out).
listing() {
	mkdir -p "$T/m"
	mount -o loop,ro "$1" "$T/m" || fail "cannot mount $1"
	"$VS_TOP/tests/treelist" -d "$T/m" | grep -v '^lost+found'
	umount "$T/m"
}

# names IMG DIR: the names in the image's directory DIR, sorted, on one line.
names() {
	debugfs -R "ls -p $2" "$1" 2>/dev/null | cut -d/ -f6 | grep -vxE '\.|\.\.|' | sort | tr '\n' ' '
}

# used IMG: the blocks e2fsck counts in use, and the inodes.
used() {
	e2fsck -fn "$1" 2>/dev/null | sed -nE 's/.*: ([0-9]+)\/[0-9]+ files.* ([0-9]+)\/[0-9]+ blocks/\1 \2/p'
}

@test "the base from layers equals umoci's tree, entry by entry; e2fsck clean" {
	need_root "the fixture has devices and owners, a loop mount reads the image"
	run_split mkbase -s 5G -o "$T/b.img" -i "$RICH" rich
	assert_ok
	[ "$(jqo .base.from)" = layers ]
	[ "$(jqo .base.source)" = "$(jq -r '.manifests[0].digest' "$RICH/index.json")" ]
	e2fsck -fn b.img > /dev/null
	umoci unpack --image "$RICH:rich" u > /dev/null
	"$VS_TOP/tests/treelist" -d u/rootfs > theirs
	listing b.img > ours
	diff -u theirs ours || fail "the trees differ (- umoci, + mkbase from layers)"
	grep -q '^dev/null c .* dev 1,3 ' ours
	grep -q '^bin/su - 4755 ' ours
	grep -q '^bin/ping .*security.capability=' ours
	grep -q '^usr/bin/c .* link-of usr/bin/a ' ours
	! grep -q '^opq/old' ours || false
	! grep -q 'wh\.' ours || false
	# the same as the tree's way, from oci-unpack's tree
	oci-unpack -q -o "$T/t" "$RICH" rich > doc
	mkbase -q -s 5G -o "$T/t.img" < doc > /dev/null
	diff -u <(listing t.img) ours
}

@test "a real Debian 12 image (debootstrap, three layers, whiteouts): the base equals umoci's tree" {
	need_root "debootstrap, and a loop mount reads the image"
	run "$VS_TOP/scripts/mkdebian" "$T/D" debian
	if [ "$status" -eq 69 ] && [[ $output == *"debootstrap failed"* ]]; then
		skip "Debian's archive cannot be reached from here: ${output##*$'\n'}"
	fi
	assert_success
	run_split mkbase -s 5G -o "$T/b.img" -i "$T/D" debian
	assert_ok
	e2fsck -fn b.img > /dev/null
	umoci unpack --image "$T/D:debian" u > /dev/null
	"$VS_TOP/tests/treelist" -d u/rootfs > theirs
	listing b.img > ours
	diff -u theirs ours || fail "the trees differ (- umoci, + mkbase from layers)"
	[ "$(wc -l < ours)" -gt 5000 ]
	grep -q '^etc/vmstrap-mark ' ours
	grep -q '^usr/bin/passwd - 4755 0 0 ' ours
	! grep -q '^opt/big' ours || false
	[ -z "$(grep '^usr/share/doc/.' ours)" ]
}

@test "from the pipeline document: oci-fetch | mkbase, no tree; the warm path reuses it" {
	tarball one <<< "f|etc/hostname|vm"
	layout x one.tar
	mkdir ws
	jq -cn --arg l "$T/L" --arg d "$(jq -r '.manifests[0].digest' L/index.json)" \
		'{image: {ref: "x", digest: $d, layout: $l}}' > doc
	run_split mkbase -C ws -s 5G < doc
	assert_ok
	[ "$(jqo .base.path)" = "$T/ws/slicer-base.img" ]
	[ "$(jqo .base.from)" = layers ]
	[ "$(jqo .image.ref)" = x ]
	[ ! -e L/rootfs ] || fail "a tree was made"
	[ "$(debugfs -R 'cat /etc/hostname' ws/slicer-base.img 2>/dev/null)" = vm ]
	ino=$(stat -c %i ws/slicer-base.img)
	run_split mkbase -C ws -s 5G < doc
	assert_ok
	[ "$(jqo .base.reused)" = true ] && [ "$(jqo .base.from)" = layers ]
	[ "$(stat -c %i ws/slicer-base.img)" = "$ino" ]
}

@test "a file deleted by an upper layer leaves nothing in the image: no blocks, no inode, no entry" {
	head -c 64M /dev/urandom > big
	printf 'f|keep|k\nd|dir\nf|dir/a|a\n' | tarball low
	tar -rf low.tar big
	printf 'f|.wh.big|\nf|dir/.wh..wh..opq|\nf|dir/b|b\n' | tarball high
	layout x low.tar high.tar
	layout y low.tar
	run_split mkbase -q -s 5G -o "$T/x.img" -i L x
	assert_ok
	mkbase -q -s 5G -o "$T/y.img" -i L y > /dev/null
	e2fsck -fn x.img > /dev/null
	[ "$(names x.img /)" = "dir keep lost+found " ] || fail "/ holds $(names x.img /)"
	[ "$(names x.img /dir)" = "b " ] || fail "/dir holds $(names x.img /dir)"
	[ "$(names y.img /)" = "big dir keep lost+found " ]
	read -r xi xb <<< "$(used x.img)"
	read -r yi yb <<< "$(used y.img)"
	# y holds big (16384 blocks of 4096 bytes) and x does not; x one
	# inode less (big gone, a gone, b new)
	[ $((yb - xb)) -ge 16384 ] || fail "x uses $xb blocks, y $yb"
	[ "$xi" -eq $((yi - 1)) ] || fail "x has $xi inodes, y $yi"
	# and on the host: about 64M less allocated
	[ $(( $(blocks y.img) - $(blocks x.img) )) -ge $((120000)) ]
}

@test "built by an ordinary user: owned by root inside, devices present, as the layers say" {
	need_root "changing user; a loop mount reads the image"
	R=$(mktemp -d /tmp/vmstrap-layers.XXXXXX)
	chmod 755 "$R"
	cp -a "$RICH" "$R/L"
	chown -R nobody "$R"
	run_split runuser -u nobody -- "$VS_BIN/mkbase" -q -s 5G -o "$R/b.img" -i "$R/L" rich
	assert_ok
	[ "$(stat -c %U "$R/b.img")" = nobody ]
	listing "$R/b.img" > got
	umoci unpack --image "$RICH:rich" u > /dev/null
	"$VS_TOP/tests/treelist" -d u/rootfs > want
	diff -u want got
	grep -q '^dev/sda b 0660 0 6 ' got
	grep -q '^ 0 0 \|^bin d 0755 0 0 ' got
	rm -rf "$R"
}

@test "bad layers are refused: no base left, an old base intact" {
	mkdir -p out
	tarball one <<< "f|file|content"
	layout good one.tar
	mkbase -q -s 5G -o "$T/out/b.img" -i L good > /dev/null
	old=$(imgsum out/b.img)
	# a diff_id that is not the layer's
	layout bad one.tar
	"$VS_TOP/tests/ocimod" L bad diffid 0 sha256:0000000000000000000000000000000000000000000000000000000000000000 > /dev/null
	run_split mkbase -q -s 5G -o "$T/out/b.img" -i L bad
	assert_refused 65 "layer 1 .*digest sha256:[0-9a-f]{64}, but the image config says sha256:0{64}"
	assert_one_line
	[ "$(imgsum out/b.img)" = "$old" ]
	assert_no_temp out
	# a truncated layer
	head -c 2000000 /dev/urandom > big
	tar -rf one.tar big
	layout cut one.tar
	"$VS_TOP/tests/ocimod" L cut truncate 0 1000000 > /dev/null
	run_split mkbase -q -s 5G -o "$T/out/c.img" -i L cut
	assert_refused 65 "layer 1: .*truncated"
	[ ! -e out/c.img ]
	assert_no_temp out
	# what oci-unpack refuses, mkbase refuses too
	local o=/outside
	local cases=(
		"dotdot|f|../outside/evil|x|'\.\.' in the path"
		"absolute|f|$o/evil|x|absolute path"
		"symlink-then-write|l|etc|$o;f|etc/evil|x|through the symlink 'etc'"
		"hardlink-outside|h|evil|../outside/secret|hardlink to '\.\./outside/secret'"
		"hardlink-missing|h|evil|nosuch|hardlink to 'nosuch', which is not in the tree"
		"hardlink-via-symlink|l|s|$o;h|evil|s/secret|through the symlink 's'"
		"whiteout-via-symlink|l|s|$o;f|s/.wh.secret|through the symlink 's'"
		"opaque-via-symlink|l|s|$o;f|s/.wh..wh..opq|through the symlink 's'"
		"notadir|f|a|x;f|a/b|y|'a' is not a directory"
		"longlink|l|long|$(head -c 5000 /dev/zero | tr '\0' a)|a symlink target of 5000 bytes"
		"namespace|x|xa|foo.bar|v|the attribute 'foo.bar' is in no namespace"
		"huge|s|big|$((17 << 40))|a file of $((17 << 40)) bytes; an ext4 file"
	)
	for c in "${cases[@]}"; do
		local name=${c%%|*} rest=${c#*|}
		local want=${rest##*|} spec=${rest%|*}
		rm -rf L
		tr ';' '\n' <<< "$spec" | tarball "$name"
		layout x "$name.tar"
		echo "case $name"	# (shown should the next lines fail)
		run_split mkbase -q -s 5G -o "$T/out/b.img" -i L x
		assert_refused 65 "layer 1: entry .*$want"
		assert_one_line
		[ "$(imgsum out/b.img)" = "$old" ]
		assert_no_temp out
	done
}

@test "SOURCE_DATE_EPOCH: two builds from layers are byte-identical, with ISA-L or zlib" {
	need_root "the fixture needs root to build"
	export SOURCE_DATE_EPOCH=1700000000
	run_split mkbase -q -s 5G -o "$T/a.img" -i "$RICH" rich
	assert_ok
	mkbase -q -s 5G -o "$T/b.img" -i "$RICH" rich > /dev/null
	cmp a.img b.img
	VS_INFLATE=zlib mkbase -q -s 5G -o "$T/z.img" -i "$RICH" rich > /dev/null
	cmp a.img z.img
}

@test "one build per image: another group's base of it is cloned and grown, on a reflink XFS sharing its data" {
	mount_loop xfs 2G "$T/x" -m reflink=1
	cd "$T/x"
	# (growing rewrites about 4M of metadata at the front, whatever the
	# data: with 160M of data, 97% stays shared)
	head -c 160M /dev/urandom > data
	printf 'f|etc/hostname|vm\n' | tarball one
	tar -rf one.tar data
	layout x one.tar
	run_split mkbase -s 15G -g web -i L x
	assert_ok
	run_split mkbase -s 20G -g db -i L x
	assert_ok
	[[ $stderr == *"db-base.img: a clone of $T/x/web-base.img (the same image), grown"* ]]
	[ "$(jqo .base.size)" = $((20 << 30)) ] && [ "$(jqo .base.from)" = layers ]
	[ "$(stat -c %s db-base.img)" = $((20 << 30)) ]
	e2fsck -fn db-base.img > /dev/null
	dumpe2fs -h db-base.img 2>/dev/null | grep -q "Block count: *$((20 << 18))$"
	[ "$(debugfs -R 'cat /etc/hostname' db-base.img 2>/dev/null)" = vm ]
	# the data is shared with web's base: at least 95% of db's
	run_split imgcheck -u web-base.img db-base.img
	assert_ok
	shared=$(jqo '.check.images[] | select(.path | endswith("db-base.img")) | .shared')
	alloc=$(jqo '.check.images[] | select(.path | endswith("db-base.img")) | .allocated')
	[ $((shared * 100)) -ge $((alloc * 95)) ] || fail "db shares $shared of $alloc bytes"
	# the warm path: both reused
	run_split mkbase -s 20G -g db -i L x
	[ "$(jqo .base.reused)" = true ]
	# a base whose build is under way (its lock held) is not waited for:
	# the base is built (two groups' builds must not wait for each other)
	flock -o -x .web-base.img.lock flock -o -x .db-base.img.lock sleep 30 &
	holder=$!
	sleep 0.3
	run_split timeout 60 mkbase -s 25G -g busy -i L x
	kill "$holder"
	pkill -f "flock -o -x .db-base.img.lock" || true
	assert_ok
	[[ $stderr != *"a clone of"* ]]
	e2fsck -fn busy-base.img > /dev/null
	# a smaller group is built, not cloned
	run_split mkbase -s 6G -g small -i L x
	assert_ok
	[[ $stderr != *"a clone of"* ]]
	[ "$(stat -c %s small-base.img)" = $((6 << 30)) ]
	e2fsck -fn small-base.img > /dev/null
	cd "$T"
}

@test "an image that does not fit the size is refused, naming the size, with no base left" {
	# 5G holds 327680 inodes: 1000 directories of 330 empty files do not fit
	python3 - <<-'PY'
	import io, tarfile
	with tarfile.open("many.tar", "w", format=tarfile.USTAR_FORMAT) as t:
	    for d in range(1000):
	        i = tarfile.TarInfo("d%d" % d); i.type = tarfile.DIRTYPE; i.mode = 0o755
	        t.addfile(i)
	        for f in range(330):
	            i = tarfile.TarInfo("d%d/f%d" % (d, f)); i.size = 0
	            t.addfile(i, io.BytesIO(b""))
	PY
	layout x many.tar
	mkdir out
	run_split mkbase -q -s 5G -o "$T/out/b.img" -i L x
	assert_refused 65 "the image does not fit in 5G \(no inode left\): give a larger size \(-s\)"
	assert_one_line
	[ ! -e out/b.img ]
	assert_no_temp out
}

@test "what the two sinks must agree on: bad sparse maps, a hardlink beneath itself, whiteouts under files" {
	mkdir -p out
	# refused by both (65), naming the entry
	local cases=(
		"overlap|S|f|4096|0,4096,0,4096|a sparse map that goes back"
		"backwards|S|f|12288|8192,4096,0,4096|a sparse map that goes back"
		"beyond|S|f|4096|1073741824,4096|goes beyond the file's size"
		"wrap|S|f|4096|17592186044416,4096|goes beyond the file's size"
		"self-ancestor|d|a;f|a/b|x;h|a|a/b|a hardlink to 'a/b', beneath itself"
	)
	for c in "${cases[@]}"; do
		local name=${c%%|*} rest=${c#*|}
		local want=${rest##*|} spec=${rest%|*}
		rm -rf L out/t
		tr ';' '\n' <<< "$spec" | tarball "$name"
		layout x "$name.tar"
		echo "case $name"	# (shown should the next lines fail)
		run_split mkbase -q -s 5G -o "$T/out/b.img" -i L x
		assert_refused 65 "layer 1: entry .*$want"
		[ ! -e out/b.img ]
		run_split oci-unpack -q -o "$T/out/t" L x
		assert_refused 65 "layer 1: entry .*$want"
	done
	# a whiteout beneath a file is nothing to white out, for both
	printf 'f|x|file\n' | tarball low
	printf 'f|x/.wh.y|\nf|x/.wh..wh..opq|\n' | tarball high
	rm -rf L
	layout x low.tar high.tar
	run_split mkbase -q -s 5G -o "$T/out/b.img" -i L x
	assert_ok
	[ "$(debugfs -R 'cat /x' out/b.img 2>/dev/null)" = file ]
	run_split oci-unpack -q -o "$T/out/t" L x
	assert_ok
	[ "$(cat out/t/x)" = file ]
}

@test "lost+found: made again when a layer removes it; refused when a layer makes it a file; attributes ext4 cannot hold are bad data" {
	printf 'f|.wh..wh..opq|\nf|etc/x|x\n' | tarball opq
	layout x opq.tar
	run_split mkbase -q -s 5G -o "$T/a.img" -i L x
	assert_ok
	e2fsck -fn a.img > /dev/null
	debugfs -R 'stat /lost+found' a.img 2>/dev/null | grep -q 'Type: directory'
	printf 'f|etc/x|x\n' | tarball one
	printf 'f|.wh.lost+found|\nf|lost+found|file\n' | tarball two
	layout y one.tar two.tar
	run_split mkbase -q -s 5G -o "$T/b.img" -i L y
	assert_refused 65 "/lost\+found in the image is not a directory"
	[ ! -e b.img ]
	# four attributes of 1500 bytes: more than an inode and a block hold
	python3 - <<-'PY'
	import io, tarfile
	with tarfile.open("x.tar", "w", format=tarfile.PAX_FORMAT) as t:
	    i = tarfile.TarInfo("f"); i.size = 1
	    i.pax_headers = {"SCHILY.xattr.user.a%d" % n: "v" * 1500 for n in range(4)}
	    t.addfile(i, io.BytesIO(b"x"))
	PY
	layout z x.tar
	run_split mkbase -q -s 5G -o "$T/c.img" -i L z
	assert_refused 65 "layer 1: entry 'f': .*attribute"
	[ ! -e c.img ]
}
